"""Storm control: at most max_concurrent_boots starts in flight per host, the rest wait in
the order they were asked for, without failing and without using up attempts."""

from __future__ import annotations

import pytest

from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from vdi.choices import DesktopState, OperationKind, OperationState
from vdi.models import Desktop, Operation
from vdi.services import BOOT_SLOT, WAITING, desktop_power, operation_run
from vdi.services.operations import _boot_slot_release


@pytest.fixture
def stopped_desktops(make_pool, host, run_tasks):
    Host.objects.filter(pk=host.pk).update(max_concurrent_boots=1)
    with run_tasks():
        pool = make_pool(min_stopped=3)
    with scopes_disabled():
        desktops = list(Desktop.objects.filter(pool=pool).order_by("created_at"))
    assert [d.state for d in desktops] == [DesktopState.STOPPED] * 3
    return desktops


def start(desktop: Desktop) -> Operation:
    with scopes_disabled():
        return desktop_power(desktop=desktop, kind=OperationKind.START, actor=None)


def hold_slot(operation: Operation, host: Host) -> None:
    """As if a worker were in the middle of this start."""
    with scopes_disabled():
        Operation.objects.filter(pk=operation.pk).update(state=OperationState.RUNNING,
                                                         boot_host=host)


def finish(operation: Operation, run_tasks) -> None:
    with scopes_disabled():
        Operation.objects.filter(pk=operation.pk).update(state=OperationState.SUCCEEDED)
        with run_tasks():
            _boot_slot_release(operation)


def run(operation: Operation) -> str:
    with scopes_disabled():
        outcome = operation_run(operation_id=operation.id)
        operation.refresh_from_db()
    return outcome


def test_a_start_waits_for_a_free_boot_slot_then_runs(stopped_desktops, host, run_tasks):
    first, second = (start(d) for d in stopped_desktops[:2])
    hold_slot(first, host)

    assert run(second) == WAITING
    assert second.state == OperationState.PENDING
    assert second.waiting_for == BOOT_SLOT
    assert second.attempts == 0  # waiting is not a failed attempt
    assert "boot slot" in second.error

    finish(first, run_tasks)  # frees the slot and wakes the first in line

    second.refresh_from_db()
    assert second.state == OperationState.SUCCEEDED
    assert second.boot_host is None and second.waiting_for == ""
    with scopes_disabled():
        assert Desktop.objects.get(pk=stopped_desktops[1].pk).state == DesktopState.RUNNING


def test_waiting_starts_go_in_the_order_they_were_asked_for(stopped_desktops, host, run_tasks):
    holder, older, newer = (start(d) for d in stopped_desktops)
    hold_slot(holder, host)
    assert run(older) == WAITING

    with scopes_disabled():
        Operation.objects.filter(pk=holder.pk).update(state=OperationState.SUCCEEDED,
                                                      boot_host=None)
    # The slot is free, but an older start waits for it: the newer one queues behind.
    assert run(newer) == WAITING
    assert run(older) == OperationState.SUCCEEDED
    assert run(newer) == OperationState.SUCCEEDED


def test_each_host_counts_its_own_boots(stopped_desktops, host, run_tasks):
    other = Host.objects.create(name="sim-2", uri="test:///default", virt_type="qemu",
                                console_address="127.0.0.1", storage_pool="default-pool",
                                state="up", cpus=16, memory_mb=65536, max_concurrent_boots=1)
    first, second = (start(d) for d in stopped_desktops[:2])
    hold_slot(first, other)  # busy elsewhere

    assert run(second) == OperationState.SUCCEEDED


def test_a_provisioning_that_waited_for_a_boot_slot_resumes_with_its_start(
    make_pool, host, run_tasks
):
    Host.objects.filter(pk=host.pk).update(max_concurrent_boots=1)
    with run_tasks():
        pool = make_pool(min_stopped=1)
    with scopes_disabled():
        holder = start(Desktop.objects.get(pool=pool))
        hold_slot(holder, host)
        from vdi.services import desktop_create

        desktop = desktop_create(pool=pool, actor=None, start=True)
        provision = Operation.objects.get(desktop=desktop)

    assert run(provision) == WAITING  # defined, then in line for a boot slot
    desktop.refresh_from_db()
    assert desktop.state == DesktopState.STARTING

    finish(holder, run_tasks)  # wakes the provisioning: only its start is left to do
    with scopes_disabled():
        provision.refresh_from_db()
        desktop.refresh_from_db()
    assert provision.state == OperationState.SUCCEEDED, provision.error
    assert desktop.state == DesktopState.RUNNING
