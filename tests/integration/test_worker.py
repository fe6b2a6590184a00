"""The slice through a real Celery worker process on the configured broker and database.

In the PostgreSQL pass of the test command that is PostgreSQL and Redis; in the SQLite pass,
the embedded default (a SQLite file and the filesystem transport).
"""

import os

import pytest
from django.conf import settings

from tenants.scoping import tenant_scope
from tests.processes import celery_worker, wait_for
from vdi.models import Desktop, Operation

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    with celery_worker(tmp_path) as log:
        yield log


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
