"""JSON log lines: who, what, from where, on every record."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from tests.api.test_slice import connect
from tests.config.test_settings import ROOT
from core.logformat import JsonFormatter

FIELDS = {"time", "level", "logger", "message", "request_id", "source", "tenant", "user",
          "client"}


@pytest.fixture
def json_log():
    """Every record logged during the test, as the JSON lines production writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def test_a_request_logs_its_id_tenant_user_and_address(api, make_pool, host, run_tasks, json_log):
    with run_tasks():
        pool = make_pool(min_ready=1)

    response = connect(api("member"), pool, run_tasks)

    assert response.status_code == 200
    [issued] = [line for line in json_log() if line["message"].startswith("ticket ")]
    assert set(issued) == FIELDS
    assert issued["request_id"] == response["X-Request-ID"]
    assert (issued["source"], issued["tenant"], issued["user"], issued["client"]) == (
        "api", "acme", "member", "127.0.0.1")
    assert issued["level"] == "INFO" and issued["logger"] == "brokers.tickets"
    assert issued["time"].endswith("+00:00")
    # The ticket's worker task ran inside the request (eagerly): its lines carry its own id.
    [in_task] = [line for line in json_log() if "console password not set" in line["message"]]
    assert in_task["source"] == "task" and in_task["request_id"] not in (
        None, response["X-Request-ID"])


def test_a_clients_request_id_is_kept(client, db, json_log):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-1234")
    assert response["X-Request-ID"] == "lb-1234"
    logging.getLogger("vdi.test").warning("hello")  # outside any request
    assert json_log()[-1]["request_id"] is None and json_log()[-1]["source"] == "system"


def test_exceptions_are_one_line_with_the_traceback(json_log):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("vdi.test").exception("it failed")
    [line] = json_log()
    assert line["message"] == "it failed" and "ValueError: boom" in line["exception"]


@pytest.mark.parametrize("profile, expected", [("production", "json"), ("demo", "plain")])
def test_production_logs_json_and_the_demo_plain_lines(tmp_path, profile, expected):
    script = ("import django, logging; django.setup();"
              " logging.getLogger('vdi.test').warning('hello')")
    env = {"PATH": "/usr/bin:/bin", "VDI_ENV": profile, "VDI_DATA_DIR": str(tmp_path),
           "SECRET_KEY": "x" * 60, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    if expected == "json":
        assert json.loads(line)["message"] == "hello"
    else:
        assert line.endswith("WARNING vdi.test hello")
