"""PostgreSQL restarted under gunicorn and a Celery worker with beat (a private cluster on a
free port, never the machine's shared one; a private Redis beside it).

Every process holds persistent connections (DB_CONN_MAX_AGE) that the restart breaks.
Django's health checks (conn_health_checks) replace a broken one at the start of the next
request or task, so the first requests after the restart succeed and the worker serves new
work, without restarting anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PASSWORD
from tests.faults.servers import postgres_cluster, redis_server, web_server
from tests.faults.support import FAULT_ENV
from tests.processes import ROOT, celery_worker, wait_for

pytestmark = pytest.mark.faults

SEED = f"""
from hypervisors.models import Host
from tenants.choices import Role
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add, tenant_create
from django.contrib.auth import get_user_model
from vdi.models import Image
from vdi.services import pool_create

tenant = tenant_create(slug="acme", name="Acme")
for name, role in (("owner", Role.OWNER), ("member", Role.MEMBER)):
    user = get_user_model().objects.create_user(name, password={PASSWORD!r})
    membership_add(tenant=tenant, user=user, role=role)
Host.objects.create(name="sim-1", uri="test:///default", virt_type="qemu",
                    console_address="127.0.0.1", storage_pool="default-pool", state="up",
                    cpus=16, memory_mb=65536)
with scopes_disabled():
    image = Image.objects.create(name="debian", version=1, base_volume="debian-v1.qcow2",
                                 disk_gb=1, default_memory_mb=512)
with tenant_scope(tenant):
    pool = pool_create(tenant=tenant, actor=user, name="Office", image=image, min_ready=1,
                       max_desktops=5, memory_mb=256)
print("pool", pool.id)
"""


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_web_and_workers_recover_from_a_postgresql_restart_by_themselves(tmp_path, stopwatch):
    with postgres_cluster() as cluster, redis_server(tmp_path) as broker:
        cluster.createdb("vdi")
        env = {"DATABASE_URL": cluster.url(), "REDIS_URL": broker.url}
        full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env}
        manage(full_env, "migrate", "--noinput")
        pool_id = manage(full_env, "shell", "-c", SEED).split()[-1]
        stopwatch.mark("seeded")

        with web_server(tmp_path, env) as web, \
                celery_worker(tmp_path, {**FAULT_ENV, **env}, beat=True) as worker:
            tokens = {name: web.token(name, PASSWORD) for name in ("owner", "member")}

            def served(name: str) -> dict:
                """Connect until the session is ready (202 while a desktop is made)."""
                def ready():
                    response = web.request("POST", f"/api/v1/tenants/acme/pools/{pool_id}/connect/",
                                           tokens[name])
                    assert response.status_code in (200, 202), response.text[:2000]
                    return response.json() if response.status_code == 200 else None

                return wait_for(ready, 60, lambda: f"{name}'s desktop (worker log:\n"
                                                   f"{worker.read_text()[-3000:]})")

            assert served("member")["state"] == "ready"

            stopwatch.mark("stopping")
            cluster.stop()
            response = web.request("GET", "/readyz")
            assert response.status_code == 503 and "database" in response.text, response.text
            cluster.start()
            stopwatch.mark("started")

            # The very first requests after the restart succeed, on the same processes.
            assert web.request("GET", "/readyz").status_code == 200
            sessions = web.request("GET", "/api/v1/tenants/acme/sessions/", tokens["member"])
            assert sessions.status_code == 200, sessions.text[:2000]
            stopwatch.mark("web answers")
            # The worker too: the owner's Connect needs it (a ticket, a new spare).
            assert served("owner")["state"] == "ready"
            stopwatch.mark("worker serves")

            def all_succeeded():
                response = web.request("GET", "/api/v1/tenants/acme/operations/", tokens["owner"])
                states = {op["state"] for op in response.json()["results"]}
                assert "failed" not in states, response.text[:3000]
                return states == {"succeeded"}

            wait_for(all_succeeded, 30, "every operation to finish")
            assert "Traceback" not in web.log.read_text()

    stopwatch.report(**{"database away (stop to started)": ("stopping", "started"),
                        "back to web answering": ("started", "web answers"),
                        "back to a Connect served": ("started", "worker serves")})
