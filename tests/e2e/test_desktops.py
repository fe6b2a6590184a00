"""Desktops on a real hypervisor, through the whole product path: the REST API, a real Celery
worker, libvirtd + QEMU (TCG) booting the lab's tiny guest, real console clients.

Each test boots one guest (~5 s under TCG); the lab (scripts/lab start) provides the daemon,
the storage pool with the base volume, and the guest's kernel and initramfs.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from brokers.choices import SessionState, TicketKind
from brokers.models import Session
from brokers.services import sessions_expire, ticket_issue
from tenants.scoping import scopes_disabled
from tests.e2e.clients import ConsoleAuthFailed, spice_login, vnc_capture
from tests.e2e.lab import desktop_in, serial_log, tail, wait_desktop
from tests.processes import host_watcher, wait_for
from vdi.choices import DesktopState, OperationKind
from vdi.models import Desktop
from vdi.services import desktop_power

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def vnc_refused(host: str, port: int, password: str) -> bool:
    try:
        vnc_capture(host, port, password, timeout_s=15)
    except ConsoleAuthFailed:
        return True
    return False


def domain_names(conn) -> set[str]:
    return {dom.name() for dom in conn.listAllDomains(0)}


def volume_names(conn, pool: str) -> set[str]:
    storage = conn.storagePoolLookupByName(pool)
    storage.refresh(0)
    return set(storage.listVolumes())


def test_a_desktop_boots_on_a_linked_clone_and_only_its_current_ticket_opens_the_console(
    lab, lab_pool, api, users, libvirt_conn, worker, tmp_path
):
    pool = lab_pool(min_ready=1, ticket_ttl_s=10)
    desktop = desktop_in(pool, DesktopState.RUNNING, worker)

    # A linked clone: a qcow2 overlay backed by the image's base volume.
    volume = libvirt_conn.storagePoolLookupByName(lab["VDI_LAB_POOL"]).storageVolLookupByName(
        desktop.volume_name)
    assert "<backingStore>" in volume.XMLDesc(0)
    assert lab["VDI_LAB_BASE_VOLUME"] in volume.XMLDesc(0)
    # The guest really boots.
    wait_for(lambda: lab["VDI_LAB_READY_LINE"] in serial_log(desktop), 90,
             lambda: f"the guest's ready line (serial log: {serial_log(desktop)[-2000:]!r})")
    # Locked until a ticket is set: nothing gets in.
    assert spice_login("127.0.0.1", desktop.spice_port, "guess") is False
    assert vnc_refused("127.0.0.1", desktop.vnc_port, "guess")

    with host_watcher(tmp_path) as watcher_log:
        response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
        assert response.status_code == 200, response.content
        ticket = response.json()
        assert ticket["password_applied"] is True
        assert (ticket["host"], ticket["port"]) == ("127.0.0.1", desktop.spice_port)
        assert spice_login(ticket["host"], ticket["port"], ticket["password"]) is True

        # The browser console's VNC ticket: the framebuffer shows the guest's screen.
        with scopes_disabled():
            session = Session.objects.get(pk=ticket["session"])
            browser = ticket_issue(session=session, user=users["member"],
                                   kind=TicketKind.BROWSER)
        screen = vnc_capture(browser.ticket.host, browser.ticket.port, browser.password)
        assert screen.convert("L").getextrema()[1] > 0, "the framebuffer is all black"

        # The host's graphics events reach the session, with the client's address (the
        # capture has logged out again by now, so it may already be disconnected).
        def connected():
            with scopes_disabled():
                session.refresh_from_db()
            return session.connected_at is not None

        wait_for(connected, 30, lambda: f"the session to be connected (watcher log:\n"
                 f"{tail(watcher_log)})")
        assert session.state in (SessionState.CONNECTED, SessionState.DISCONNECTED)
        assert session.client_address == "127.0.0.1"

    # A fresh ticket replaces the old one at once.
    fresh = api("member").post(f"/api/v1/tenants/acme/sessions/{ticket['session']}/ticket/")
    assert fresh.status_code == 200, fresh.content
    assert spice_login("127.0.0.1", desktop.spice_port, ticket["password"]) is False
    assert spice_login("127.0.0.1", desktop.spice_port, fresh.json()["password"]) is True
    with scopes_disabled():
        replaced_vnc = browser.password
        browser = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
    assert vnc_refused("127.0.0.1", desktop.vnc_port, replaced_vnc)

    # And expires on its own (the pool's ticket lifetime is 10 s).
    time.sleep(max(0.0, (browser.ticket.expires_at.timestamp() - time.time())) + 1.5)
    assert vnc_refused("127.0.0.1", desktop.vnc_port, browser.password)
    # SPICE counts the expiry on QEMU's monotonic clock from when the ticket was set: it may
    # lag the wall-clock expiry by up to ~2 s.
    wait_for(lambda: not spice_login("127.0.0.1", desktop.spice_port, fresh.json()["password"]),
             6, "the expired SPICE ticket to be refused")
    assert ticket["password"] not in tail(worker, 10**6)


def test_power_operations_run_on_the_real_guest_and_delete_leaves_nothing_behind(
    lab, lab_pool, api, libvirt_conn, worker
):
    pool = lab_pool(min_stopped=1)
    desktop = desktop_in(pool, DesktopState.STOPPED, worker)
    assert desktop.name in domain_names(libvirt_conn)
    admin = api("admin")

    def power(kind: str):
        response = admin.post(f"/api/v1/tenants/acme/desktops/{desktop.id}/{kind}/")
        assert response.status_code == 202, response.content

    power("start")
    wait_desktop(desktop, DesktopState.RUNNING, worker)
    assert libvirt_conn.lookupByName(desktop.name).isActive()

    power("shutdown")  # the guest may ignore ACPI: then it is powered off after the grace
    wait_desktop(desktop, DesktopState.STOPPED, worker)
    assert not libvirt_conn.lookupByName(desktop.name).isActive()

    power("start")
    wait_desktop(desktop, DesktopState.RUNNING, worker)
    power("poweroff")
    wait_desktop(desktop, DesktopState.STOPPED, worker)
    assert not libvirt_conn.lookupByName(desktop.name).isActive()

    with scopes_disabled():
        desktop_power(desktop=desktop, kind=OperationKind.DELETE, actor=None)

    def gone():
        with scopes_disabled():
            return not Desktop.objects.filter(pk=desktop.pk).exists()

    wait_for(gone, 60, lambda: f"the desktop to be deleted (worker log:\n{tail(worker)})")
    assert desktop.name not in domain_names(libvirt_conn)
    assert desktop.volume_name not in volume_names(libvirt_conn, lab["VDI_LAB_POOL"])
    assert lab["VDI_LAB_BASE_VOLUME"] in volume_names(libvirt_conn, lab["VDI_LAB_POOL"])


def test_a_killed_qemu_process_is_noticed_by_reconciliation(lab_pool, lab_host, api, worker,
                                                            libvirt_conn):
    pool = lab_pool(min_ready=1)
    desktop = desktop_in(pool, DesktopState.RUNNING, worker)
    pid = int(Path(f"/run/libvirt/qemu/{desktop.name}.pid").read_text())

    os.kill(pid, signal.SIGKILL)
    # libvirt notices the dead QEMU on its own; reconcile once it has.
    wait_for(lambda: not libvirt_conn.lookupByName(desktop.name).isActive(), 30,
             "libvirt to see the QEMU process gone")
    response = api("staff").post(f"/api/v1/hosts/{lab_host.id}/refresh/")
    assert response.status_code == 202

    lost = wait_desktop(desktop, DesktopState.STOPPED, worker, timeout_s=60)
    assert "stopped outside the portal" in lost.last_error


def test_an_idle_session_ends_and_its_floating_desktop_is_recycled_on_the_real_guest(
    lab_pool, api, worker, libvirt_conn
):
    pool = lab_pool(min_ready=1, idle_timeout_s=60)
    desktop = desktop_in(pool, DesktopState.RUNNING, worker)
    connect = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert connect.status_code == 200, connect.content
    session_id = connect.json()["session"]
    with scopes_disabled():  # nobody opened a console for longer than the idle timeout
        Session.objects.filter(pk=session_id).update(
            state_changed_at=timezone.now() - timedelta(seconds=61))

    with scopes_disabled():
        assert sessions_expire() == 1  # what beat runs every 30 s

    with scopes_disabled():
        session = Session.objects.get(pk=session_id)
    assert (session.state, session.end_reason) == (SessionState.ENDED, "idle")

    def recycled():
        with scopes_disabled():
            reset = desktop.operations.filter(kind="reset").first()
        assert reset is None or reset.state != "failed", reset.error
        return reset is not None and reset.state == "succeeded"

    wait_for(recycled, 90, lambda: f"the desktop to be reset (worker log:\n{tail(worker)})")
    with scopes_disabled():
        fresh = Desktop.objects.get(pk=desktop.pk)
    assert fresh.assigned_user is None and fresh.state == DesktopState.RUNNING
    assert libvirt_conn.lookupByName(desktop.name).isActive()  # back in the pool, running
