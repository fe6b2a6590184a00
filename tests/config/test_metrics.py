"""/metrics: the fleet's state from the database, events from every process, for operators
only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.db.models import Sum
from prometheus_client.parser import text_string_to_metric_families

from hypervisors.models import Host
from tenants.scoping import scopes_disabled, tenant_scope
from tests.api.test_slice import connect
from tests.processes import celery_worker, running, wait_for
from tests.config.test_settings import ROOT
from config import celery_app
from vdi.choices import OperationState
from core.metrics import OPERATION_SECONDS
from vdi.models import Desktop, Operation
from vdi.services import desktop_create, operation_run


def scrape(client) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of one /metrics answer."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def ready_pool(make_pool, host, run_tasks):
    with run_tasks():
        return make_pool(min_ready=2)


def test_a_scripted_scenario_shows_in_the_metrics(client, api, ready_pool, tenant, host,
                                                   run_tasks, make_pool):
    before = scrape(client)
    with scopes_disabled():
        earlier = set(Operation.objects.values_list("id", flat=True))
    body = connect(api("member"), ready_pool, run_tasks).json()
    assert body["state"] == "ready"
    # An operation that fails for good: its desktop's host is gone before it is placed.
    broken = make_pool(name="Broken")
    Host.objects.filter(pk=host.pk).update(enabled=False)
    with tenant_scope(tenant):
        desktop_create(pool=broken, actor=None, start=True)
        operation = Operation.objects.get(pool=broken)
    with scopes_disabled():
        while operation_run(operation_id=operation.id) == OperationState.PENDING:
            pass
    Host.objects.filter(pk=host.pk).update(enabled=True)
    celery_app.send_task("core.idempotency_keys_expire", queue="vdi")  # one waiting task
    try:
        after = scrape(client)
    finally:
        celery_app.control.purge()

    with scopes_disabled():
        running = Desktop.objects.filter(pool=ready_pool, state="running").count()
        made = Operation.objects.filter(kind="provision", state="succeeded").exclude(
            id__in=earlier).count()
    assert running == 3  # the member's, and two spares again
    labels = {"tenant": "acme", "pool": "Office", "host": "sim-1"}
    assert value(after, "vdi_desktops", state="running", **labels) == running
    assert value(after, "vdi_desktops", state="error", tenant="acme", pool="Broken", host="") == 1
    assert value(after, "vdi_sessions", state="ready", tenant="acme") == 1
    with scopes_disabled():
        committed = Desktop.objects.filter(host=host).aggregate(
            vcpus=Sum("vcpus"), memory=Sum("memory_mb"))
    assert value(after, "vdi_host_vcpus", host="sim-1", kind="committed") == committed["vcpus"]
    assert value(after, "vdi_host_vcpus", host="sim-1", kind="capacity") == 16 * 4
    assert value(after, "vdi_host_memory_bytes", host="sim-1",
                 kind="committed") == committed["memory"] * 2**20
    assert value(after, "vdi_host_memory_bytes", host="sim-1", kind="capacity") == 65536 * 2**20
    assert value(after, "vdi_host_up", host="sim-1", state="up") == 1
    assert (value(after, "vdi_celery_queue_length", queue="vdi")
            - value(before, "vdi_celery_queue_length", queue="vdi")) == 1

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("vdi_ticket_issue_seconds_count", protocol="spice", outcome="issued") == 1
    assert grew("vdi_operation_failures_total", kind="provision") == 1
    assert grew("vdi_operation_duration_seconds_count", kind="provision", outcome="failed") == 1
    assert grew("vdi_operation_duration_seconds_count", kind="provision",
                outcome="retry") == operation.max_attempts - 1
    assert grew("vdi_operation_duration_seconds_count", kind="provision",
                outcome="succeeded") == made == 1  # the spare replacing the member's
    # django-prometheus: requests by view
    assert grew("django_http_requests_total_by_view_transport_method_total",
                view="api:pool-connect", transport="http", method="POST") == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_workers_operations_are_counted_by_the_web_process(tmp_path, client, api, make_pool,
                                                             host, tenant):
    """Multiprocess mode: the worker writes its figures where /metrics here reads them."""
    provisioned = {"kind": "provision", "outcome": "succeeded"}
    before = value(scrape(client), "vdi_operation_duration_seconds_count", **provisioned)
    with celery_worker(tmp_path, {"LOG_FORMAT": "json"}) as log:
        pool = make_pool(min_ready=1)

        def counted():  # the desktop runs a moment before its operation's run is recorded
            return value(scrape(client), "vdi_operation_duration_seconds_count",
                         **provisioned) - before

        wait_for(counted, 60, lambda: f"a provision counted (worker log:\n"
                                      f"{log.read_text()[-3000:]})")
        with tenant_scope(tenant):
            assert Desktop.objects.filter(pool=pool, state="running").count() == 1
        assert counted() == 1
        not_yet = scrape(client)
        # The worker sets the ticket (and logs that the simulated host can't take it).
        response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
        assert response.status_code == 200, response.content
        ticketed = scrape(client)

    # The worker logged JSON lines, a task's with the task's id as its request id.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message", "request_id", "source",
                          "tenant", "user", "client"} <= set(line) for line in lines)
    in_task = [line for line in lines if line["logger"] == "brokers.tickets"
               and "console password not set" in line["message"]]
    assert in_task and in_task[0]["source"] == "task" and in_task[0]["request_id"]
    assert in_task[0]["request_id"] in log.read_text().split("brokers.ticket_apply[", 1)[1]
    assert in_task[0]["origin_request_id"] == response["X-Request-ID"]  # the connect's
    assert (value(ticketed, "vdi_ticket_issue_seconds_count", protocol="spice", outcome="issued")
            - value(not_yet, "vdi_ticket_issue_seconds_count", protocol="spice",
                    outcome="issued")) == 1


# --- who may read them ----------------------------------------------------------------------
def test_only_allowed_addresses_or_the_token_may_read_metrics(client, db, settings):
    settings.VDI = {**settings.VDI, "METRICS_ALLOWED_IPS": ["10.1.0.0/16"],
                    "METRICS_TOKEN": "s3cret-metrics-token"}
    assert client.get("/metrics").status_code == 403  # 127.0.0.1 is no longer allowed
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret-metrics-token").status_code == 403
    assert client.get("/metrics",
                      HTTP_AUTHORIZATION="Bearer s3cret-metrics-token").status_code == 200


def test_without_a_token_configured_no_bearer_is_accepted(client, db, settings):
    settings.VDI = {**settings.VDI, "METRICS_ALLOWED_IPS": [], "METRICS_TOKEN": ""}
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_a_request_relayed_by_a_local_proxy_is_not_loopback(client, db, settings):
    """nginx on the same machine connects from 127.0.0.1: the client behind it is someone
    else, so without VDI_THROTTLE_NUM_PROXIES its address can't be trusted either way."""
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200


# --- health ---------------------------------------------------------------------------------
def test_probes_and_metrics_are_not_redirected_to_https(tmp_path):
    """In production, plain-HTTP probes from inside the network get their answer, while
    pages redirect to HTTPS."""
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "VDI_ENV"}}
    env.update(VDI_DATA_DIR=str(tmp_path), SECRET_KEY="x" * 60, ALLOWED_HOSTS="testserver",
               DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(raise_request_exception=False)\n"
        "print(c.get('/healthz').status_code,"
        " c.get('/metrics', REMOTE_ADDR='192.0.2.1').status_code,"
        " c.get('/accounts/login/').status_code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120,
                            env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "403", "301"]  # /metrics: answered, refused


def test_the_exporter_serves_a_worker_machines_metrics(tmp_path, db):
    """On a machine without the portal: the same files, the same readers, no database."""
    OPERATION_SECONDS.labels(kind="start", outcome="succeeded").observe(0.5)  # this process's
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "manage.py", "metrics_exporter", "--listen", f"127.0.0.1:{port}"]
    env = {"VDI_METRICS_ALLOWED_IPS": "10.0.0.0/8", "VDI_METRICS_TOKEN": "exporter-token"}
    with running(command, tmp_path / "exporter.log", "serving worker metrics", env):
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 403
        request = urllib.request.Request(url, headers={"Authorization": "Bearer exporter-token"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read().decode()
    assert 'vdi_operation_duration_seconds_count{kind="start",outcome="succeeded"}' in body
    assert "vdi_desktops" not in body  # the state gauges are the portal's
