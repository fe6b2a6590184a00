"""Concurrency on real database connections and a real worker: quotas, claims, redelivery.

The threaded tests open one real database connection per thread (``transaction=True``), as
``tests/brokers/test_claims.py`` does, so the tenant lock, ``SELECT ... FOR UPDATE SKIP
LOCKED`` (PostgreSQL) and ``BEGIN IMMEDIATE`` (SQLite) are what keeps them apart.
"""

from __future__ import annotations

import re
import threading
import time

import libvirt
import pytest
from django.db import connection, transaction

from brokers.choices import LIVE_SESSION_STATES
from brokers.models import Session
from brokers.services import session_connect
from tenants.choices import Role
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add
from tests.processes import celery_worker, wait_for
from vdi.choices import DesktopState, OperationKind, OperationState
from core.errors import Conflict, QuotaExceeded
from vdi.models import Desktop, Operation
from vdi.services import desktop_claim_spare, desktop_power, operation_run
from vdi.tasks import operation_run_task

THREADED = pytest.mark.django_db(transaction=True)
POSTGRESQL = connection.vendor == "postgresql"
JOIN_TIMEOUT_S = 60


def run_at_once(target, arguments) -> list[threading.Thread]:
    """Start one thread per argument and wait for all; the threads meet at a barrier first."""
    threads = [threading.Thread(target=target, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"{len(stuck)} threads still running after {JOIN_TIMEOUT_S} s"
    return threads


# --- 1. quotas under parallel connects ------------------------------------------------------
CONNECTING_USERS = 50


@THREADED
@pytest.mark.parametrize(
    ("quota", "pool_vcpus"),
    [({"max_desktops": 10}, 1), ({"max_vcpus": 20}, 2)],
    ids=["max_desktops=10", "max_vcpus=20"],
)
def test_parallel_desktop_creations_never_exceed_the_quota(
    quota, pool_vcpus, make_pool, make_user, tenant, host
):
    for field, limit in quota.items():
        setattr(tenant, field, limit)
    tenant.save()
    # Dedicated, no spares: every connect must create a desktop, under the tenant's quota.
    pool = make_pool(name="Dedicated", kind="dedicated", min_ready=0, min_stopped=0,
                     max_desktops=100, max_per_user=1, vcpus=pool_vcpus, memory_mb=256)
    people = [make_user(f"user{n:02}") for n in range(CONNECTING_USERS)]
    for user in people:
        membership_add(tenant=tenant, user=user, role=Role.MEMBER)

    barrier = threading.Barrier(len(people))
    connected: dict[str, object] = {}
    refused: dict[str, Conflict] = {}
    errors: list[BaseException] = []

    def connect(user):
        try:
            barrier.wait(timeout=30)
            with tenant_scope(tenant):
                connected[user.username] = session_connect(user=user, pool=pool)
        except Conflict as error:
            refused[user.username] = error
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    run_at_once(connect, people)

    assert not errors, errors
    assert len(connected) == 10, f"{len(connected)} connects succeeded, quota {quota}"
    assert len(refused) == CONNECTING_USERS - 10
    codes = {type(error).__name__: error.code for error in refused.values()}
    assert codes == {"QuotaExceeded": "quota_exceeded"}, codes
    assert {error.details["quota"] for error in refused.values()} == set(quota)
    assert all(isinstance(error, QuotaExceeded) for error in refused.values())

    with tenant_scope(tenant):
        for username, result in connected.items():
            # Pending: a new desktop assigned to this user, waiting for its provisioning.
            assert result.pending
            session = Session.objects.select_related("desktop__assigned_user", "operation").get(
                pk=result.session.pk)
            assert session.desktop.assigned_user.username == username
            assert session.operation.kind == OperationKind.PROVISION
        desktops = Desktop.objects.all()
        assert desktops.count() == 10
        assert sum(desktops.values_list("vcpus", flat=True)) == 10 * pool_vcpus
        assert set(desktops.values_list("assigned_user__username", flat=True)) == set(connected)
        assert Session.objects.filter(state__in=LIVE_SESSION_STATES).count() == 10
        assert Operation.objects.filter(kind=OperationKind.PROVISION).count() == 10


# --- 2. many parallel claims on the spares ---------------------------------------------------
SPARES = 40
# The product promises 100 parallel claims. Each thread holds its own database connection,
# and this PostgreSQL has max_connections = 100, shared with the test's own connection and
# with other test runs on the machine: 80 claimers leave room for them. SQLite has no
# connection limit, so there all 100 claim at once.
CLAIMERS = 80 if POSTGRESQL else 100


@THREADED
def test_a_hundred_parallel_claims_hand_each_desktop_to_one_user(
    make_pool, make_user, tenant, host
):
    pool = make_pool(name="Floating", min_ready=0, max_desktops=SPARES)
    with tenant_scope(tenant):
        for n in range(SPARES):
            Desktop.objects.create(tenant=tenant, pool=pool, image=pool.image, name=f"spare-{n:02}",
                                   vcpus=1, memory_mb=256, state="running", host=host)
    claimants = [make_user(f"claimer{n:03}") for n in range(CLAIMERS)]
    barrier = threading.Barrier(len(claimants))
    won: dict[str, str] = {}
    lost: list[str] = []
    errors: list[BaseException] = []

    def claim(user):
        try:
            barrier.wait(timeout=30)
            with tenant_scope(tenant), transaction.atomic():
                desktop = desktop_claim_spare(pool=pool, user=user, state="running")
            if desktop is None:
                lost.append(user.username)
            else:
                won[user.username] = desktop.name
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    run_at_once(claim, claimants)

    assert not errors, errors[:5]
    assert len(won) == SPARES, f"{len(won)} of {CLAIMERS} claims won {SPARES} spares"
    assert len(set(won.values())) == SPARES  # no desktop handed out twice
    assert len(lost) == CLAIMERS - SPARES
    with tenant_scope(tenant):
        owners = dict(Desktop.objects.values_list("name", "assigned_user__username"))
    # What every winner was told is what the database holds: one user per desktop.
    assert owners == {name: user for user, name in won.items()}


# --- 3. redelivered operation messages -------------------------------------------------------
def task_outcomes(log: str, task_name: str) -> dict[str, str]:
    """Task id -> the value the worker logged as its result ("raised <Error>" if it raised)."""
    pattern = (rf"Task {re.escape(task_name)}\[([0-9a-f-]+)\] "
               rf"(?:succeeded in [0-9.e-]+s: '(\w+)'|raised unexpected: (\w+))")
    return {task_id: returned or f"raised {raised}"
            for task_id, returned, raised in re.findall(pattern, log)}


@THREADED
@pytest.mark.worker
def test_a_task_delivered_twice_creates_one_domain(tmp_path, make_pool, tenant, host, users):
    with celery_worker(tmp_path) as worker_log:

        def runs() -> dict[str, str]:
            return task_outcomes(worker_log.read_text(), "vdi.operation_run")

        def tail() -> str:
            return f"(worker log:\n{worker_log.read_text()[-3000:]})"

        pool = make_pool(min_stopped=1)  # committed at once: autoscale + provision run in the worker

        def provisioned():
            with tenant_scope(tenant):
                failed = Operation.objects.filter(pool=pool, state="failed").first()
                assert failed is None, f"{failed.kind} failed: {failed.error}"
                done = Operation.objects.filter(pool=pool, kind=OperationKind.PROVISION,
                                                state=OperationState.SUCCEEDED).first()
            return done if done is not None and len(runs()) == 1 else None

        provision = wait_for(provisioned, 30, lambda: f"a stopped spare {tail()}")
        provision_run = runs()
        with tenant_scope(tenant):
            desktop = Desktop.objects.get(pool=pool)
            assert desktop.state == DesktopState.STOPPED
            with transaction.atomic():
                start = desktop_power(desktop=desktop, kind="start", actor=users["admin"])
        # The commit enqueued the start once; the broker now delivers it twice more, and the
        # provisioning (already done) once more.
        duplicates = [operation_run_task.delay(str(start.id)).id for _ in range(2)]
        provision_again = operation_run_task.delay(str(provision.id)).id

        def finished():
            with tenant_scope(tenant):
                start.refresh_from_db()
            return start.is_finished

        wait_for(finished, 20, lambda: f"the start {tail()}")
        # Four more messages: the start's own, its two duplicates and the provision's again.
        wait_for(lambda: len(runs()) >= 5, 20, lambda: f"every message to be handled {tail()}")
        time.sleep(0.5)  # anything a duplicate might have set off would show by now
        log = worker_log.read_text()

    outcomes = task_outcomes(log, "vdi.operation_run")
    assert list(provision_run.values()) == ["succeeded"], log[-3000:]
    assert outcomes[provision_again] == "skipped", log[-3000:]
    start_runs = {task_id: outcome for task_id, outcome in outcomes.items()
                  if task_id not in provision_run and task_id != provision_again}
    assert set(duplicates) <= set(start_runs) and len(start_runs) == 3, log[-3000:]
    # The three deliveries of the start are identical and the worker runs four threads, so
    # any of them may claim the operation first: exactly one does the work, the other two
    # find it taken and return 'skipped'.
    assert sorted(start_runs.values()) == ["skipped", "skipped", "succeeded"], log[-3000:]
    assert start.state == OperationState.SUCCEEDED, start.error
    assert start.attempts == 1
    with tenant_scope(tenant):
        provision.refresh_from_db()
        assert provision.attempts == 1
        desktop.refresh_from_db()
        assert desktop.state == DesktopState.RUNNING and desktop.host == host
        # One desktop, and only the operations that were asked for.
        assert Desktop.objects.filter(pool=pool).count() == 1
        assert sorted(Operation.objects.filter(pool=pool).values_list("kind", flat=True)) == [
            OperationKind.PROVISION, OperationKind.START]
    # The worker's simulated hypervisor (test:///default) lives inside the worker process, so
    # its domains can't be listed from here. Instead: a domain is only ever defined by a
    # provision operation that ran (attempts counts each run), and the worker logged exactly
    # one run per operation that did work ('succeeded') while every other delivery was
    # 'skipped' before touching the host. The in-process test below checks the hypervisor.


def test_duplicate_provision_messages_define_one_domain_in_process(
    db, make_pool, tenant, host, run_tasks
):
    with run_tasks():
        pool = make_pool(min_stopped=1)
    with tenant_scope(tenant):
        desktop = Desktop.objects.get(pool=pool)
        provision = Operation.objects.get(desktop=desktop, kind=OperationKind.PROVISION)
    assert desktop.state == DesktopState.STOPPED and provision.state == OperationState.SUCCEEDED
    conn = libvirt.open("test:///default")
    try:
        # Mark the defined domain: defining it again (a second provisioning) would replace
        # its configuration and drop the mark.
        conn.lookupByName(desktop.name).setMetadata(
            libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, "first definition", None, None,
            libvirt.VIR_DOMAIN_AFFECT_CONFIG)

        with scopes_disabled(), run_tasks():
            assert operation_run(operation_id=provision.id) == "skipped"
            assert operation_run(operation_id=str(provision.id)) == "skipped"

        named = [dom for dom in conn.listAllDomains(0) if dom.name() == desktop.name]
        assert len(named) == 1
        assert named[0].metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None,
                                 libvirt.VIR_DOMAIN_AFFECT_CONFIG) == "first definition"
        assert not named[0].isActive()  # still the stopped spare it was
        volumes = conn.storagePoolLookupByName("default-pool").listVolumes()
        assert desktop.volume_name and volumes.count(desktop.volume_name) == 1
        provision.refresh_from_db()
        assert provision.attempts == 1 and provision.state == OperationState.SUCCEEDED
        with tenant_scope(tenant):
            assert Operation.objects.filter(pool=pool).count() == 1
            assert Desktop.objects.get(pk=desktop.pk).state == DesktopState.STOPPED
    finally:  # tests/conftest.py clears the simulated hypervisor after the test
        conn.close()
