"""docs/api.md's walkthrough, run for real: its ```sh blocks become one bash script that
drives a live server over HTTP with curl, while a real Celery worker provisions the pool's
spare on the simulated host ``test:///default`` (only the worker talks to libvirt).

The blocks to run are those between ``<!-- checked`` and ``<!-- /checked -->`` in the doc.
The script gets the server's URL, its users and the host in the variables the doc sets at
its top (``BASE=${BASE:-…}`` …), and must exit 0 and print the doc's milestones.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from brokers.models import Session
from tenants.scoping import scopes_disabled
from tests.processes import celery_worker
from vdi.models import Desktop

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BEGIN, END = "<!-- checked", "<!-- /checked -->"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SCRIPT_TIMEOUT_S = 240  # the doc's loops are bounded (60 tries each); this is a backstop

# Users the test makes; the doc's defaults (the demo's admin/demo, alice/demo) are replaced.
PEOPLE = {"STAFF": ("platform-ops", True), "ORG_ADMIN": ("carol", False),
          "MEMBER": ("dave", False)}
PASSWORD = "walk through the docs 42"


def checked_section(text: str) -> str:
    begin = text.find(BEGIN)
    assert begin >= 0, f"{DOC.name}: no {BEGIN!r} marker"
    end = text.find(END, begin)
    assert end > begin, f"{DOC.name}: no {END!r} after {BEGIN!r}"
    return text[text.index("-->", begin) + 3:end]


def sh_blocks(text: str) -> list[str]:
    """The ```sh blocks of the checked section, in order."""
    return [body for lang, body in FENCE.findall(checked_section(text)) if lang == "sh"]


def walkthrough_script(text: str) -> str:
    blocks = sh_blocks(text)
    parts = [f"# --- block {number} of {DOC.name}'s walkthrough\n{block}"
             for number, block in enumerate(blocks, 1)]
    return "set -euo pipefail\n\n" + "\n".join(parts)


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = cwd / "walkthrough.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)


# --- the doc's structure (no server) --------------------------------------------------------
def test_the_walkthrough_is_marked_and_uses_only_curl_and_python():
    text = DOC.read_text()
    blocks = sh_blocks(text)
    assert len(blocks) >= 10, "the checked section lost its sh blocks"
    script = "\n".join(blocks)
    assert "jq" not in re.findall(r"[\w.-]+", script)
    assert "exit" not in re.findall(r"\b\w+\b", script), \
        "no `exit` in blocks meant to be pasted into an interactive shell"
    settings = blocks[0]
    for name in ("BASE", "STAFF_USER", "STAFF_PASSWORD", "ORG_ADMIN_USER", "ORG_ADMIN_PASSWORD",
                 "MEMBER_USER", "MEMBER_PASSWORD", "TENANT", "HOST_URI", "HOST_STORAGE_POOL"):
        assert re.search(rf"^{name}=\$\{{{name}:-[^}}]+\}}", settings, re.MULTILINE), \
            f"the settings block must set {name}=${{{name}:-default}}"


def _api_routes() -> set[str]:
    """Every route under /api/v1/, written as the endpoint table writes it
    (``tenants/{slug}/pools/{id}/connect/``)."""
    routes = set()

    def walk(patterns, prefix):
        for pattern in patterns:
            text = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            elif isinstance(pattern, URLPattern) and text.startswith("api/v1/"):
                route = text.removeprefix("api/v1/").replace("^", "").replace("$", "")
                route = re.sub(r"\(\?P<pk>[^)]*\)|<uuid:pk>", "{id}", route)
                route = re.sub(r"\(\?P<slug>[^)]*\)|<slug:tenant_slug>", "{slug}", route)
                if route:  # not the catch-all that answers 404
                    routes.add(route.replace("\\.", "."))

    walk(get_resolver().url_patterns, "")
    return routes


def table_paths(text: str) -> set[str]:
    """The paths of the endpoint table's first column. ``…/x/`` is short for
    ``tenants/{slug}/x/``; a bare ``shutdown/`` replaces the last segment of the path
    before it in the same cell."""
    table = text[text.index("## Endpoints"):text.index(BEGIN)]
    paths = set()
    for cell in re.findall(r"^\|([^|]*)\|", table, re.MULTILINE):
        previous = None
        for token in re.findall(r"`([^`]+)`", cell):
            path = token.split()[-1].split("?")[0]
            if not path.endswith(("/", ".vv")):
                continue  # a method or a body
            if path.startswith("…/"):
                path = "tenants/{slug}/" + path[2:]
            elif previous and "/" not in path.rstrip("/"):
                parent = previous.rstrip("/").rpartition("/")[0]
                path = f"{parent}/{path}" if parent else path
            paths.add(path)
            previous = path
    return paths


def test_the_endpoint_table_lists_every_route():
    routes = _api_routes()
    assert "tenants/{slug}/pools/{id}/connect/" in routes, sorted(routes)
    listed = table_paths(DOC.read_text())
    missing = sorted(routes - listed)
    assert not missing, f"routes missing from the endpoint table of {DOC.name}: {missing}"
    unknown = sorted(listed - routes)
    assert not unknown, f"the endpoint table of {DOC.name} lists routes that don't exist: {unknown}"


# --- the walkthrough, for real ---------------------------------------------------------------
@pytest.fixture
def people(django_user_model):
    """The three people of the walkthrough, as the variables its settings block reads."""
    env = {}
    for variable, (username, staff) in PEOPLE.items():
        django_user_model.objects.create_user(username=username, password=PASSWORD,
                                              email=f"{username}@example.com", is_staff=staff)
        env[f"{variable}_USER"] = username
        env[f"{variable}_PASSWORD"] = PASSWORD
    return env


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_walkthrough_runs_against_a_live_server_and_worker(live_server, people, tmp_path):
    script = walkthrough_script(DOC.read_text())
    env = {**people, "BASE": live_server.url, "TENANT": "initech", "HOST_NAME": "kvm1",
           "HOST_URI": "test:///default", "HOST_STORAGE_POOL": "default-pool",
           "HOST_CONSOLE_ADDRESS": "127.0.0.1"}
    with celery_worker(tmp_path) as worker_log:
        started = time.monotonic()
        result = run_script(script, tmp_path, env)
        elapsed = time.monotonic() - started
    output = result.stdout
    report = (f"exit {result.returncode} after {elapsed:.1f} s\n--- stdout\n{output}\n"
              f"--- stderr\n{result.stderr[-4000:]}\n"
              f"--- worker log (tail)\n{worker_log.read_text()[-3000:]}")
    assert result.returncode == 0, report

    milestones = [
        r"^==> staff token obtained \(\d+ characters\)$",
        r"^==> host kvm1 is up$",
        r"^==> organisation initech: carol \(owner\), dave \(member\)$",
        r"^==> pool Office: [1-9]\d* running spare\(s\), desktop_count [1-9]",
        r"^==> my pools: Office, Training$",
        r"^==> connect to Office answered 20[02], session [0-9a-f-]{36}$",
        r"^==> ticket: ready spice 127\.0\.0\.1 ",
        r"^\[virt-viewer\]$",
        r"^password=\(hidden here\)$",
        r"^title=Office \(Initech\)$",
        r"^==> session [0-9a-f-]{36} ended reason user$",
        r"^==> connect to Training answered 202, session [0-9a-f-]{36}$",
        r'^==> pending: \{.*"state":\s*"pending".*"retry_after":\s*\d+',
        r"^Retry-After: \d+",
        r"^==> operation provision (pending|running|succeeded)$",
        r"^==> session [0-9a-f-]{36} is ready, ticket answered 200$",
        r"^==> session [0-9a-f-]{36} ended reason user$",
        r"^==> Training enabled: False$",
        r'^\{"error":\s*\{"code":\s*"pool_disabled"',
        r"^==> HTTP 409$",
        r"^==> Training enabled: True$",
    ]
    position = 0
    for milestone in milestones:
        match = re.compile(milestone, re.MULTILINE).search(output, position)
        assert match, f"milestone {milestone!r} missing (or out of order)\n{report}"
        position = match.end()
    # The ticket's password never reaches the output: the doc hides it.
    assert re.search(r"^password=(?!\(hidden here\))", output, re.MULTILINE) is None
    assert (tmp_path / "desktop.vv").read_text().startswith("[virt-viewer]\n")
    # What the output claims happened, happened: on the registered host, through the worker.
    with scopes_disabled():
        assert Desktop.objects.filter(pool__name="Office", pool__tenant__slug="initech",
                                      host__name="kvm1").exists()
        ended = Session.objects.filter(user__username="dave", state="ended", end_reason="user")
        assert sorted(ended.values_list("pool__name", flat=True)) == ["Office", "Training"]


@pytest.mark.django_db(transaction=True)
def test_a_wrong_endpoint_in_the_doc_breaks_the_script(live_server, people, tmp_path):
    """The harness can fail: the same script with one path misspelt stops at curl's HTTP
    error (no worker needed: it stops at the first request)."""
    script = walkthrough_script(DOC.read_text())
    assert script.count("$API/auth/token/") == 1
    broken = script.replace("$API/auth/token/", "$API/auth/tokens/")
    result = run_script(broken, tmp_path, {**people, "BASE": live_server.url})
    assert result.returncode != 0, result.stdout
    assert re.search(r"curl: \(22\) The requested URL returned error: 40\d", result.stderr), \
        result.stderr
    assert "==> staff token obtained" not in result.stdout
