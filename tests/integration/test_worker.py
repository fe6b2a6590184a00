"""The slice through a real Celery worker process on the configured broker and database.

In the PostgreSQL pass of the test command that is PostgreSQL and Redis; in the SQLite pass,
the embedded default (a SQLite file and the filesystem transport).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tenants.scoping import tenant_scope
from vdi.models import Desktop, Operation

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery", "-A", "vdi"]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(predicate, timeout_s: float, what):
    """Poll ``predicate``; ``what`` (text, or a callable giving it) explains a time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for "
                         f"{what() if callable(what) else what}")


@pytest.fixture
def worker(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "DATABASE_URL": database_url(), "C_FORCE_ROOT": "1",
           "PYTHONUNBUFFERED": "1"}
    subprocess.run([*CELERY, "purge", "-f", "-Q", "vdi,console"], env=env, cwd=ROOT,
                   check=True, capture_output=True, timeout=60)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*CELERY, "worker", "--pool=threads", "--concurrency=4", "-Q", "vdi,console",
             "--without-gossip", "--without-mingle", "-l", "info", "-n", "test@%h"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "ready." in log.read_text() or process.poll() is not None, 60,
                 "the worker to start")
        assert process.poll() is None, f"worker exited:\n{log.read_text()}"
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_pool_reaches_min_ready_through_the_queue_and_connect_gets_a_ticket(
    worker, make_pool, host, tenant, api
):
    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://") == bool(os.environ.get("REDIS_URL"))

    pool = make_pool(min_ready=2)  # committed at once: the enqueue happens for real

    def running():
        with tenant_scope(tenant):
            failed = Operation.objects.filter(pool=pool, state="failed").first()
            assert failed is None, f"{failed.kind} failed: {failed.error}"
            return Desktop.objects.filter(pool=pool, state="running").count() == 2

    wait_for(running, 60, lambda: f"2 running spares (worker log:\n{worker.read_text()[-3000:]})")

    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "ready" and body["password_applied"] is False
    with tenant_scope(tenant):
        assert Desktop.objects.get(pk=body["desktop"]).assigned_user.username == "member"
    # The claim triggers the autoscaler, which tops the pool back up to 2 free spares.
    def topped_up():
        with tenant_scope(tenant):
            return Desktop.objects.filter(pool=pool, state="running",
                                          assigned_user__isnull=True).count() == 2

    wait_for(topped_up, 60, "the pool to be topped up again")
    assert body["password"] not in worker.read_text()
