"""Pools, spares, operations and power actions, run eagerly on a simulated host."""

import pytest

from hypervisors.drivers import driver_for
from tenants.scoping import scopes_disabled, tenant_scope
from vdi.choices import DesktopState, OperationState
from core.errors import Conflict, QuotaExceeded
from vdi.models import Desktop, Operation
from vdi.services import (
    desktop_claim_spare,
    desktop_create,
    desktop_power,
    operation_run,
    pool_autoscale,
)


def desktops(tenant, **filters):
    with tenant_scope(tenant):
        return list(Desktop.objects.filter(**filters).order_by("created_at"))


def test_pool_create_provisions_min_ready_running_spares(make_pool, tenant, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=2, min_stopped=1)
    running = desktops(tenant, pool=pool, state=DesktopState.RUNNING)
    stopped = desktops(tenant, pool=pool, state=DesktopState.STOPPED)
    assert len(running) == 2 and len(stopped) == 1
    domains = driver_for(host).list_domains()
    for desktop in running + stopped:
        assert desktop.host == host and desktop.assigned_user is None
        assert desktop.name in domains
    with tenant_scope(tenant):
        ops = Operation.objects.filter(pool=pool)
        assert ops.count() == 3
        assert set(ops.values_list("state", flat=True)) == {OperationState.SUCCEEDED}


def test_autoscale_respects_max_desktops_and_is_idempotent(make_pool, tenant, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=3, max_desktops=3)
    with scopes_disabled():
        assert pool_autoscale(pool=pool) == []  # already topped up
    assert len(desktops(tenant, pool=pool)) == 3


def test_autoscale_stops_at_the_tenant_quota(make_pool, tenant, host, run_tasks):
    tenant.max_vcpus = 2
    tenant.save()
    with run_tasks():
        pool = make_pool(min_ready=4, vcpus=1)
    assert len(desktops(tenant, pool=pool)) == 2


def test_without_a_host_the_autoscaler_makes_nothing(make_pool, tenant, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=2)
    assert desktops(tenant, pool=pool) == []


def test_provisioning_without_a_host_fails_visibly_after_retries(make_pool, tenant, run_tasks):
    pool = make_pool(min_ready=0)
    with tenant_scope(tenant):
        desktop_create(pool=pool, actor=None, start=True)  # say the host vanished since
        operation = Operation.objects.get(pool=pool)
        # Each retry is enqueued with a countdown; run the attempts by hand.
        while operation.state == OperationState.PENDING:
            with scopes_disabled():
                operation_run(operation_id=operation.id)
            operation.refresh_from_db()
        assert operation.state == OperationState.FAILED
        assert "no enabled, up host has room" in operation.error
        assert operation.attempts == operation.max_attempts
        assert Desktop.objects.get(pool=pool).state == DesktopState.ERROR


def test_a_redelivered_operation_does_nothing_twice(make_pool, tenant, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with tenant_scope(tenant):
        operation = Operation.objects.get(pool=pool)
    with scopes_disabled():
        assert operation_run(operation_id=operation.id) == "skipped"
    operation.refresh_from_db()
    assert operation.attempts == 1


def test_a_spare_is_claimed_by_one_user_only(make_pool, tenant, host, users, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with tenant_scope(tenant):
        first = desktop_claim_spare(pool=pool, user=users["member"], state=DesktopState.RUNNING)
        second = desktop_claim_spare(pool=pool, user=users["admin"], state=DesktopState.RUNNING)
    assert first is not None and first.assigned_user == users["member"]
    assert second is None


def test_power_actions_follow_the_state_machine(make_pool, tenant, host, users, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    desktop = desktops(tenant, pool=pool)[0]

    def power(kind):
        with tenant_scope(tenant), run_tasks():
            desktop_power(desktop=desktop, kind=kind, actor=users["admin"])
        with scopes_disabled():
            found = Desktop.objects.filter(pk=desktop.pk).first()
        return found.state if found else None

    assert power("poweroff") == DesktopState.STOPPED
    with tenant_scope(tenant), pytest.raises(Conflict) as refused:
        desktop.refresh_from_db()
        desktop_power(desktop=desktop, kind="shutdown", actor=users["admin"])
    assert refused.value.code == "invalid_state"
    assert power("start") == DesktopState.RUNNING
    assert power("reboot") == DesktopState.RUNNING
    assert power("reset") == DesktopState.RUNNING
    assert power("shutdown") == DesktopState.STOPPED
    assert power("delete") is None
    assert desktop.name not in driver_for(host).list_domains()


def test_quota_exceeded_is_a_conflict_with_its_code(tenant):
    from tenants.services import quota_check_desktops

    tenant.max_desktops = 0
    with pytest.raises(QuotaExceeded) as error:
        quota_check_desktops(tenant=tenant, vcpus=1, memory_mb=256)
    assert error.value.code == "quota_exceeded" and error.value.status == 409


def test_autoscale_counts_spares_being_made_by_their_intent(make_pool, tenant, host, users):
    # Nothing runs: the provisioning operations stay pending, as with a busy worker.
    pool = make_pool(min_ready=2, min_stopped=1)
    with scopes_disabled():
        first = pool_autoscale(pool=pool)
        assert len(first) == 3
        assert pool_autoscale(pool=pool) == []  # intents are counted: nothing more is made
        intents = sorted(Operation.objects.filter(pool=pool).values_list("params__start",
                                                                          flat=True))
    assert intents == [False, True, True]


def test_reaper_requeues_then_fails_operations_whose_worker_died(make_pool, tenant, host):
    from datetime import timedelta

    from django.utils import timezone

    from vdi.services import operation_claim, operations_reap

    pool = make_pool(min_ready=0)
    with scopes_disabled():
        from vdi.services import desktop_create

        desktop = desktop_create(pool=pool, actor=None, start=True)
        operation = Operation.objects.get(desktop=desktop)
        for attempt in range(1, operation.max_attempts + 1):
            assert operation_claim(operation_id=operation.id) is not None  # a worker takes it...
            Operation.objects.filter(pk=operation.pk).update(
                deadline_at=timezone.now() - timedelta(seconds=1))  # ...and dies
            assert operations_reap() == 1
            operation.refresh_from_db()
            expected = OperationState.FAILED if attempt == operation.max_attempts else OperationState.PENDING
            assert operation.state == expected, attempt
        assert "worker stopped answering" in operation.error
        desktop.refresh_from_db()
        assert desktop.state == DesktopState.ERROR


def test_reaper_sends_again_pending_operations_whose_message_was_lost(
    make_pool, host, settings, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from vdi import tasks
    from vdi.services import desktop_create, operations_reap

    sent = []
    monkeypatch.setattr(tasks.operation_run_task, "delay", lambda *args: sent.append(args))
    pool = make_pool(min_ready=0)
    with scopes_disabled():
        desktop = desktop_create(pool=pool, actor=None, start=True)
        operation = Operation.objects.get(desktop=desktop)
        assert operations_reap() == 0  # just enqueued: its message is on its way

        # The broker restarted empty: nothing will ever deliver it.
        long_ago = timezone.now() - timedelta(seconds=settings.VDI["OPERATION_DEADLINE_S"] + 1)
        Operation.objects.filter(pk=operation.pk).update(state_changed_at=long_ago)
        assert operations_reap() == 1
        assert sent == [(str(operation.id),)]
        assert operations_reap() == 0  # sent again once per deadline, not on every pass
        operation.refresh_from_db()
        assert operation.state == OperationState.PENDING


def test_a_spare_an_operation_is_about_to_change_is_not_claimed(make_pool, host, run_tasks,
                                                                 users, tenant):
    from vdi.choices import OperationKind
    from vdi.services import desktop_claim_spare, operation_create

    with run_tasks():
        pool = make_pool(min_ready=2)
    with tenant_scope(tenant):
        older, newer = Desktop.objects.filter(pool=pool).order_by("created_at")
        # Trimmed as surplus (or reset after a logoff): its operation is queued, not yet run.
        operation_create(desktop=older, kind=OperationKind.SHUTDOWN, actor=None)

        claimed = desktop_claim_spare(pool=pool, user=users["member"], state=DesktopState.RUNNING)
        assert claimed == newer
        assert desktop_claim_spare(pool=pool, user=users["owner"],
                                   state=DesktopState.RUNNING) is None
