import pytest

from brokers.choices import SESSION_MACHINE, SessionState
from tenants.scoping import tenant_scope
from vdi.choices import DESKTOP_MACHINE, OPERATION_MACHINE, DesktopState, OperationState
from vdi.models import Desktop
from core.statemachine import IllegalTransition


def test_desktop_lifecycle_path_is_allowed():
    path = ["pending", "provisioning", "stopped", "starting", "running", "stopping", "stopped"]
    for current, target in zip(path, path[1:]):
        assert DESKTOP_MACHINE.can(current, target), (current, target)


@pytest.mark.parametrize("current,target", [
    ("pending", "running"), ("stopped", "stopping"), ("running", "provisioning"),
    ("deleting", "running"), ("stopping", "starting"),
])
def test_desktop_illegal_transitions_are_refused(current, target):
    assert not DESKTOP_MACHINE.can(current, target)
    with pytest.raises(IllegalTransition):
        DESKTOP_MACHINE.check(current, target)


def test_every_state_is_declared():
    assert set(DESKTOP_MACHINE.transitions) == set(DesktopState.values)
    assert set(OPERATION_MACHINE.transitions) == set(OperationState.values)
    assert set(SESSION_MACHINE.transitions) == set(SessionState.values)


def test_session_ends_for_good():
    assert SESSION_MACHINE.can("pending", "ready")
    assert SESSION_MACHINE.can("connected", "disconnected")
    assert SESSION_MACHINE.can("disconnected", "connected")
    assert SESSION_MACHINE.transitions["ended"] == frozenset()


def test_apply_is_conditional_on_the_state_in_the_database(make_pool, tenant):
    pool = make_pool()
    with tenant_scope(tenant):
        desktop = Desktop.objects.create(tenant=tenant, pool=pool, image=pool.image,
                                         name="d1", vcpus=1, memory_mb=256)
        stale = Desktop.objects.get(pk=desktop.pk)
        DESKTOP_MACHINE.apply(desktop, DesktopState.PROVISIONING)
        assert Desktop.objects.get(pk=desktop.pk).state == "provisioning"
        # Another process still believes the desktop is pending: its transition loses.
        with pytest.raises(IllegalTransition):
            DESKTOP_MACHINE.apply(stale, DesktopState.ERROR)
        assert Desktop.objects.get(pk=desktop.pk).state == "provisioning"
