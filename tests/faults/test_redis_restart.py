"""Redis restarted empty (a private redis-server without persistence, never the machine's
shared one) under gunicorn and a Celery worker with beat.

Operations queued when Redis goes away, and operations asked for while it is down, are
lost from the broker but not from the database: the reaper sends pending operations again,
and the web and the worker reconnect by themselves.
"""

from __future__ import annotations

import pytest
import redis

from brokers.choices import SessionState
from brokers.models import Session
from tenants.choices import Role
from tenants.scoping import scopes_disabled
from tenants.services import membership_add
from tests.conftest import PASSWORD
from tests.e2e.lab import tail
from tests.faults.servers import redis_server, web_server
from tests.faults.support import FAULT_ENV, wait_no_operation_stuck
from tests.processes import celery_worker, wait_for
from vdi.choices import OperationState
from vdi.models import Desktop, Operation

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def connect(web, token: str, pool, expected: int = 202) -> str:
    """A Connect: 202 while it waits for a desktop (or for a ticket), 200 with a ticket."""
    response = web.request("POST", f"/api/v1/tenants/acme/pools/{pool.id}/connect/", token)
    assert response.status_code == expected, f"{response.status_code}: {response.text[:2000]}"
    return response.json()["session"]


def ready(session_ids: list[str]) -> bool:
    with scopes_disabled():
        states = list(Session.objects.filter(pk__in=session_ids).values_list("state", flat=True))
    assert SessionState.ENDED not in states
    return states == [SessionState.READY] * len(session_ids)


def test_operations_survive_a_redis_restart_and_everyone_reconnects(
    make_pool, host, users, make_user, tenant, tmp_path, stopwatch
):
    pool = make_pool(min_ready=0, max_desktops=5)
    more = [make_user(f"user{n}") for n in range(2)]
    for user in more:
        membership_add(tenant=tenant, user=user, role=Role.MEMBER)

    with redis_server(tmp_path) as broker:
        env = {"REDIS_URL": broker.url}
        queue = redis.Redis.from_url(broker.url)
        # Throttling on, as in production: its history lives in Redis too (and fails open).
        throttled = {**env, "VDI_THROTTLE_USER": "6000/min", "VDI_THROTTLE_TENANT": "6000/min"}
        with web_server(tmp_path, throttled) as web:
            tokens = {name: web.token(name, PASSWORD) for name in ("owner", "admin", "member")}
            tokens.update({user.username: web.token(user.username, PASSWORD) for user in more})

            # 1. Two provisionings wait in the queue (no worker yet); Redis restarts empty.
            queued = [connect(web, tokens[name], pool) for name in ("owner", "admin")]
            assert queue.llen("vdi") >= 2
            broker.restart()
            stopwatch.mark("restarted")
            assert queue.llen("vdi") == 0  # the messages are gone for good

            # Supervised, as in production: kombu may end a worker that loses Redis while it
            # holds unacknowledged messages ("Unrecoverable error"); it is started again.
            with celery_worker(tmp_path, {**FAULT_ENV, **env}, beat=True,
                               supervised=True) as worker:
                wait_for(lambda: ready(queued), 60,
                         lambda: f"the queued connects to be served (log:\n{tail(worker)})")
                stopwatch.mark("queued served")

                # 2. Redis down: a Connect still answers (its work is recorded) and is
                # served once Redis is back; one to a ready session waits for its ticket.
                broker.stop()
                stopwatch.mark("down")
                during = [connect(web, tokens["member"], pool)]
                connect(web, tokens["owner"], pool)
                broker.start()
                stopwatch.mark("up")
                wait_for(lambda: ready(during), 60,
                         lambda: f"the connect made while Redis was down (log:\n{tail(worker)})")
                stopwatch.mark("during served")

                # 3. Across another restart the web process and the worker carry on.
                broker.restart()
                stopwatch.mark("restarted again")
                after = [connect(web, tokens[user.username], pool) for user in more]
                wait_for(lambda: ready(after), 60,
                         lambda: f"connects after the restart (log:\n{tail(worker)})")
                stopwatch.mark("after served")
                # Tickets flow again (through the console queue and the result store). Asked
                # for a desktop made after the last restart: a restarted worker starts with
                # an empty simulated hypervisor.
                connect(web, tokens[more[0].username], pool, expected=200)
                wait_no_operation_stuck(worker)
                restarts = worker.read_text().count("supervise: exited")

    with scopes_disabled():
        assert Desktop.objects.filter(pool=pool).count() == 5  # one per Connect, none twice
        outcomes = set(Operation.objects.values_list("state", flat=True))
    assert outcomes == {OperationState.SUCCEEDED}
    print(f"\nworker restarted {restarts} time(s) by its supervisor")
    stopwatch.report(**{
        "restart to queued work served": ("restarted", "queued served"),
        "Redis back to work asked during the outage served": ("up", "during served"),
        "restart to new work served": ("restarted again", "after served"),
    })
