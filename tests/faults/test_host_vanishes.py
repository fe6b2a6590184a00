"""A host that vanishes for good while a user works on it.

The host is the lab's libvirtd reached over SSH through an sshd of this test's own (its own
port), the way remote hosts are. Killing that sshd and its sessions makes the host vanish for
the portal, while the lab's libvirtd itself carries on for everyone else. A second host (the
lab's libvirtd over its local socket) takes the new work.
"""

from __future__ import annotations

import pytest

from brokers.choices import EndReason, SessionState
from brokers.models import Session
from hypervisors.choices import HostState
from tenants.scoping import scopes_disabled
from tests.e2e.lab import register_lab_host, tail
from tests.faults.servers import ssh_endpoint
from tests.faults.support import FAULT_ENV, wait_no_operation_stuck
from tests.processes import celery_worker, wait_for
from vdi.choices import DesktopState
from vdi.models import Desktop

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def session_state(session_id: str) -> tuple[str, str]:
    with scopes_disabled():
        session = Session.objects.get(pk=session_id)
    return session.state, session.end_reason


def ready_on(api, role: str, pool, worker) -> Desktop:
    """Connect and wait until the session is ready; its desktop."""
    response = api(role).post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code in (200, 202), response.content
    session_id = response.json()["session"]
    wait_for(lambda: session_state(session_id)[0] == SessionState.READY, 60,
             lambda: f"{role}'s session to be ready {session_state(session_id)} "
                     f"(log:\n{tail(worker)})")
    with scopes_disabled():
        return Session.objects.select_related("desktop__host").get(pk=session_id).desktop


def test_a_vanished_host_loses_its_desktops_and_new_connects_go_elsewhere(
    lab, api, make_pool, lab_image, remove_guests, libvirt_conn, tmp_path, stopwatch
):
    with ssh_endpoint(tmp_path, lab) as far_away, \
            celery_worker(tmp_path, FAULT_ENV, beat=True) as worker:
        far = register_lab_host(api, lab, worker, name="far", uri=far_away.uri)
        pool = make_pool(image=lab_image, memory_mb=160, protocol="spice")
        lost = ready_on(api, "member", pool, worker)
        assert lost.host_id == far.id
        with scopes_disabled():
            lost_session = Session.objects.get(desktop=lost).pk
        near = register_lab_host(api, lab, worker, name="near", uri=lab["VDI_LAB_URI"])

        far_away.vanish()
        stopwatch.mark("vanished")

        def gone():
            far.refresh_from_db()
            with scopes_disabled():
                state = Desktop.objects.get(pk=lost.pk).state
            return far.state == HostState.DOWN and state == DesktopState.UNKNOWN

        wait_for(gone, 30, lambda: f"the host to go down (log:\n{tail(worker)})")
        stopwatch.mark("down")
        assert session_state(lost_session) == (SessionState.ENDED, EndReason.DESKTOP_LOST)
        wait_no_operation_stuck(worker)

        # The same user, and another one, get desktops on the host that answers.
        again = ready_on(api, "member", pool, worker)
        other = ready_on(api, "owner", pool, worker)
        stopwatch.mark("served elsewhere")
        assert {again.host_id, other.host_id} == {near.id}
        assert libvirt_conn.lookupByName(again.name).isActive()
        wait_no_operation_stuck(worker)

        far.refresh_from_db()
        assert far.state == HostState.DOWN and far.last_error  # still gone, with the reason
        with scopes_disabled():
            assert Desktop.objects.get(pk=lost.pk).state == DesktopState.UNKNOWN
    stopwatch.report(**{"vanished to host down": ("vanished", "down"),
                        "down to two users served elsewhere": ("down", "served elsewhere")})
