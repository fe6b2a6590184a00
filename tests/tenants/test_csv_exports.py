"""CSV exports open in spreadsheets: no cell may start a formula (CSV injection)."""

from __future__ import annotations

import csv
import io

import pytest

from tenants.models import AuditEvent
from tenants.audit import audit_record
from core.api.renderers import CSVRenderer, csv_cell

FORMULAS = ["=HYPERLINK(\"http://evil.example.com\",\"x\")", "+1+1", "-2+3", "@SUM(A1:A2)",
            "\tcmd", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_text_that_would_start_a_formula_is_quoted(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["Office", "a=b", "", 42, -3, 1.5, None, True])
def test_other_values_are_left_alone(value):
    assert csv_cell(value) == value


def test_nested_data_becomes_text_and_is_checked_too():
    assert csv_cell({"a": 1}) == "{'a': 1}"
    assert csv_cell(["=x"]) == "['=x']"


def test_the_renderer_writes_every_cell_through_it():
    text = CSVRenderer().render({"results": [{"name": "=1+1", "hours": -2.5, "note": "ok"}]})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == [{"name": "'=1+1", "hours": "-2.5", "note": "ok"}]  # numbers stay numbers


def test_the_audit_export_neutralises_what_people_typed(api, tenant):
    audit_record(tenant=tenant, actor=None, action="pool.create", target=AuditEvent,
                 object_id="=cmd|' /C calc'!A0", details={"name": "=evil"})

    response = api("admin").get("/api/v1/tenants/acme/audit/?format=csv")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    row = next(r for r in rows if r["action"] == "pool.create")
    assert row["object_id"] == "'=cmd|' /C calc'!A0"
    for cells in rows:
        for cell in cells.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
