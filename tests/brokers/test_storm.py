"""A login storm on real database connections: many users press Connect at the same moment
against a pool with fewer ready spares than users.

Exactly as many get a ticket (200) as there were ready spares, every other one is pending
(202) on a desktop of their own, no desktop is in two live sessions and no quota is passed.
On PostgreSQL: 300 connects against 100 spares. SQLite serialises writers, so its pass runs
the same storm at a tenth of the size.

The worker's side of a ticket (setting the password on a live domain) is answered in
process: this test is about the broker's claims, not libvirt.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count

from brokers import services as broker_services
from brokers.tasks import ticket_apply_task
from brokers.choices import LIVE_SESSION_STATES
from brokers.models import Session
from hypervisors.models import Host
from tenants.choices import Role
from tenants.models import Membership, Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from vdi import tasks as vdi_tasks
from vdi.models import Desktop

pytestmark = pytest.mark.django_db(transaction=True)


class _Answered:
    """The console worker's answer, computed in the caller's thread."""

    def __init__(self, kwargs):
        self.kwargs = kwargs

    def get(self, **_kwargs):
        return ticket_apply_task.run(**self.kwargs)


@pytest.fixture
def storm_size():
    return (300, 100) if connection.vendor == "postgresql" else (30, 10)


def test_a_login_storm_hands_each_ready_spare_to_one_user(make_pool, host, tenant,
                                                          storm_size, monkeypatch, settings):
    users_count, spares = storm_size
    # One pool takes the whole storm: past the platform's default cap on a pool's size.
    settings.VDI = {**settings.VDI, "POOL_MAX_DESKTOPS": users_count + spares}
    # Room on the host for everyone who has to wait for a new desktop.
    Host.objects.filter(pk=host.pk).update(cpus=10_000, memory_mb=10_000_000)
    Tenant.objects.filter(pk=tenant.pk).update(max_desktops=users_count + spares,
                                               max_sessions=users_count)
    monkeypatch.setattr(ticket_apply_task, "apply_async",
                        lambda **options: _Answered(options["kwargs"]))
    monkeypatch.setattr("hypervisors.drivers.libvirt_driver.LibvirtDriver."
                        "set_console_password", lambda *args, **kwargs: None)
    for task in (vdi_tasks.operation_run_task, vdi_tasks.pool_autoscale_task):
        monkeypatch.setattr(task, "delay", lambda *args, **kwargs: None)

    pool = make_pool(min_ready=0, max_desktops=users_count + spares)
    with tenant_scope(tenant):
        Desktop.objects.bulk_create(
            Desktop(tenant=tenant, pool=pool, image=pool.image, name=f"spare-{n}", vcpus=1,
                    memory_mb=256, state="running", host=host, vnc_port=5900 + n)
            for n in range(spares)
        )
        pool.refresh_from_db()
    User = get_user_model()
    people = User.objects.bulk_create(User(username=f"user{n}") for n in range(users_count))
    with tenant_scope(tenant):
        Membership.objects.bulk_create(Membership(tenant=tenant, user=u, role=Role.MEMBER)
                                       for u in people)

    barrier = threading.Barrier(min(40, users_count))
    errors: list[BaseException] = []

    def press_connect(user):
        try:
            try:
                barrier.wait(timeout=5)  # the first wave starts together
            except threading.BrokenBarrierError:
                pass
            with tenant_scope(tenant):
                result = broker_services.session_connect(user=user, pool=pool)
            return "ready" if result.ticket else "pending", result.session.desktop_id
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            return "error", None
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=40) as pool_of_users:
        outcomes = list(pool_of_users.map(press_connect, people))

    assert not errors, errors[:3]
    ready = [desktop for outcome, desktop in outcomes if outcome == "ready"]
    pending = [desktop for outcome, desktop in outcomes if outcome == "pending"]
    assert len(ready) == spares
    assert len(pending) == users_count - spares
    assert len(set(ready + pending)) == users_count  # every user a desktop of their own
    with scopes_disabled():
        doubled = (Session.objects.filter(state__in=LIVE_SESSION_STATES)
                   .values("desktop").annotate(n=Count("id")).filter(n__gt=1))
        assert not doubled.exists()
        assert Desktop.objects.filter(tenant=tenant).count() <= users_count + spares
        assert Session.objects.filter(state__in=LIVE_SESSION_STATES).count() == users_count
