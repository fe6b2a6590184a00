"""Host checks, reconciliation with libvirt, and host events, on libvirt's test driver."""

from __future__ import annotations

import libvirt
import pytest
from django.utils import timezone

from brokers.choices import EndReason, SessionState
from brokers.models import Session
from hypervisors.choices import HostState
from hypervisors.drivers import DomainEvent, EventKind, PowerState
from hypervisors.drivers import libvirt_connections
from hypervisors.models import Host
from hypervisors.services import host_check, host_event, host_reconcile
from hypervisors.watcher import HostWatcher
from tenants.scoping import scopes_disabled
from vdi.choices import DesktopState, OperationKind
from vdi.models import Desktop
from vdi.services import operation_create

UNREACHABLE = "test+unix:///default?socket=/nonexistent/vdi-tests/libvirt-sock"


@pytest.fixture
def libvirt_conn():
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@pytest.fixture
def running_desktop(make_pool, host, run_tasks):
    """A desktop provisioned and started on the simulated host, so its domain exists."""
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
    assert desktop.state == DesktopState.RUNNING
    return desktop  # tests/conftest.py clears the simulated hypervisor after the test


def refreshed(desktop: Desktop) -> Desktop:
    with scopes_disabled():
        return Desktop.objects.get(pk=desktop.pk)


# --- checks ---------------------------------------------------------------------------------
def test_check_brings_a_new_host_up_with_what_it_found(db, libvirt_conn):
    host = Host.objects.create(name="new", uri="test:///default", virt_type="qemu",
                               console_address="127.0.0.1", storage_pool="default-pool")
    _model, memory_mb, cpus, *_ = libvirt_conn.getInfo()

    host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.UP
    assert (host.cpus, host.memory_mb) == (cpus, memory_mb)
    assert host.storage_free_gb > 0
    assert host.last_seen_at and host.last_checked_at and host.failures == 0
    assert host.last_error == ""


def test_a_missing_storage_pool_keeps_the_host_down_with_the_reason(db):
    host = Host.objects.create(name="nopool", uri="test:///default", virt_type="qemu",
                               console_address="127.0.0.1", storage_pool="no-such-pool")

    host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.DOWN
    assert "storage pool 'no-such-pool' does not exist" in host.last_error


def test_a_new_unreachable_host_is_down_at_once_with_the_reason(db):
    host = Host.objects.create(name="far", uri=UNREACHABLE, virt_type="qemu",
                               console_address="127.0.0.1")

    host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.DOWN
    assert "/nonexistent/vdi-tests/libvirt-sock" in host.last_error
    assert host.last_seen_at is None


def test_an_up_host_goes_down_after_repeated_failures_and_comes_back_reconciled(
    running_desktop, host, settings, users
):
    settings.VDI = {**settings.VDI, "HOST_DOWN_AFTER_FAILURES": 3}
    with scopes_disabled():  # a desktop its user kept: it stays theirs while the host is away
        Desktop.objects.filter(pk=running_desktop.pk).update(assigned_user=users["member"])
    Host.objects.filter(pk=host.pk).update(uri=UNREACHABLE)
    host.refresh_from_db()

    for _ in range(2):
        host_check(host=host)
    assert host.state == HostState.UP and host.failures == 2
    assert refreshed(running_desktop).state == DesktopState.RUNNING

    host_check(host=host)
    assert host.state == HostState.DOWN
    desktop = refreshed(running_desktop)
    assert desktop.state == DesktopState.UNKNOWN
    assert "not answering" in desktop.last_error

    Host.objects.filter(pk=host.pk).update(uri="test:///default")
    host.refresh_from_db()
    host_check(host=host)

    assert host.state == HostState.UP and host.failures == 0
    desktop = refreshed(running_desktop)
    assert desktop.state == DesktopState.RUNNING  # what libvirt says it really is
    assert desktop.last_error == ""


def test_a_refused_certificate_takes_an_up_host_down_at_once_and_keeps_it_there(
    running_desktop, host, settings, monkeypatch
):
    """No retry changes a certificate: the first check that meets one takes the host down
    with libvirt's reason, and the next says the same instead of hiding it."""
    settings.VDI = {**settings.VDI, "HOST_DOWN_AFTER_FAILURES": 3}
    refused = "qemu+tls://127.0.0.1:1/system"  # nothing answers a second handshake there
    real_open = libvirt.open

    def open_refusing_the_certificate(uri=None):
        if uri == refused:
            error = libvirt.libvirtError("authentication failed: Failed to verify peer's "
                                         "certificate")
            error.err = (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_FROM_RPC, str(error),
                         libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
            raise error
        return real_open(uri)

    monkeypatch.setattr(libvirt, "open", open_refusing_the_certificate)
    Host.objects.filter(pk=host.pk).update(uri=refused)
    host.refresh_from_db()

    for failures in (1, 2):
        host_check(host=host)

        assert (host.state, host.failures) == (HostState.DOWN, failures)
        assert host.last_error == "authentication failed: Failed to verify peer's certificate"
        assert refreshed(running_desktop).state == DesktopState.UNKNOWN


def test_sessions_on_a_host_that_went_down_end_and_their_desktop_is_reset_when_it_returns(
    running_desktop, host, settings, users, tenant
):
    settings.VDI = {**settings.VDI, "HOST_DOWN_AFTER_FAILURES": 1}
    with scopes_disabled():
        Desktop.objects.filter(pk=running_desktop.pk).update(assigned_user=users["member"])
        session = Session.objects.create(tenant=tenant, pool=running_desktop.pool,
                                         user=users["member"], desktop=running_desktop,
                                         state=SessionState.READY)
    Host.objects.filter(pk=host.pk).update(uri=UNREACHABLE)
    host.refresh_from_db()

    host_check(host=host)

    with scopes_disabled():
        session.refresh_from_db()
    assert (session.state, session.end_reason) == (SessionState.ENDED, EndReason.DESKTOP_LOST)
    desktop = refreshed(running_desktop)
    assert desktop.state == DesktopState.UNKNOWN
    assert desktop.assigned_user is None  # a floating desktop: nobody's until it is reset

    Host.objects.filter(pk=host.pk).update(uri="test:///default")
    host.refresh_from_db()
    host_check(host=host)

    # Back, but the ended session's work may still be in it: reset before anyone claims it.
    desktop = refreshed(running_desktop)
    assert desktop.state == DesktopState.RECYCLING
    with scopes_disabled():
        reset = desktop.operations.get(state="pending")
    assert (reset.kind, reset.params) == (OperationKind.RESET, {"start": True})


def test_a_host_in_maintenance_stays_there_when_checked(db, host):
    Host.objects.filter(pk=host.pk).update(state=HostState.MAINTENANCE)
    host.refresh_from_db()

    host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.MAINTENANCE
    assert host.last_seen_at is not None


# --- reconciliation -------------------------------------------------------------------------
def test_a_domain_stopped_behind_the_portals_back_is_noticed_and_its_session_ends(
    running_desktop, host, libvirt_conn, users, tenant
):
    with scopes_disabled():
        session = Session.objects.create(tenant=tenant, pool=running_desktop.pool,
                                         user=users["member"], desktop=running_desktop,
                                         state=SessionState.READY)
    libvirt_conn.lookupByName(running_desktop.name).destroy()

    changed = host_reconcile(host=host)

    assert changed == {running_desktop.name: DesktopState.STOPPED}
    desktop = refreshed(running_desktop)
    assert desktop.state == DesktopState.STOPPED
    assert "stopped outside the portal" in desktop.last_error
    assert desktop.vnc_port is None
    with scopes_disabled():
        session.refresh_from_db()
    assert (session.state, session.end_reason) == (SessionState.ENDED, EndReason.DESKTOP_LOST)


def test_a_domain_deleted_behind_the_portals_back_marks_the_desktop_lost(
    running_desktop, host, libvirt_conn
):
    dom = libvirt_conn.lookupByName(running_desktop.name)
    dom.destroy()
    dom.undefine()

    host_reconcile(host=host)

    desktop = refreshed(running_desktop)
    assert desktop.state == DesktopState.ERROR
    assert "disappeared" in desktop.last_error


def test_a_desktop_with_an_operation_in_flight_is_left_to_it(running_desktop, host, libvirt_conn):
    with scopes_disabled():
        operation_create(desktop=running_desktop, kind=OperationKind.REBOOT, actor=None)
    libvirt_conn.lookupByName(running_desktop.name).destroy()

    assert host_reconcile(host=host) == {}
    assert refreshed(running_desktop).state == DesktopState.RUNNING


def test_domains_the_portal_did_not_create_are_reported_and_left_alone(
    running_desktop, host, libvirt_conn
):
    stranger = libvirt_conn.lookupByName("test")  # the test driver's own domain

    host_reconcile(host=host)

    host.refresh_from_db()
    assert "test" in host.unknown_domains
    assert running_desktop.name not in host.unknown_domains
    assert stranger.isActive()  # never touched


def test_an_observation_older_than_the_desktops_last_change_is_ignored(
    running_desktop, host, libvirt_conn
):
    seen_at = timezone.now()
    with scopes_disabled():
        Desktop.objects.filter(pk=running_desktop.pk).update(state_changed_at=timezone.now())
    event = DomainEvent(kind=EventKind.LIFECYCLE, domain=running_desktop.name,
                        power_state=PowerState.STOPPED, detail="destroyed")

    host_event(host=host, event=event, seen_at=seen_at)

    assert refreshed(running_desktop).state == DesktopState.RUNNING


# --- events ---------------------------------------------------------------------------------
def test_the_watcher_applies_lifecycle_events_as_they_happen(running_desktop, host,
                                                             libvirt_conn, run_tasks):
    watcher = HostWatcher(include_simulated=True)
    with run_tasks():  # the check it enqueues on subscribing
        watcher.sync()
    try:
        libvirt_conn.lookupByName(running_desktop.name).destroy()
        assert watcher.apply_pending(timeout_s=5) >= 1
        desktop = refreshed(running_desktop)
        assert desktop.state == DesktopState.STOPPED
        assert "(destroyed)" in desktop.last_error

        libvirt_conn.lookupByName(running_desktop.name).create()
        watcher.apply_pending(timeout_s=5)
        assert refreshed(running_desktop).state == DesktopState.RUNNING
    finally:
        for watch in watcher.watches.values():
            watch.subscription.cancel()


def test_console_events_move_the_session_and_record_the_client(running_desktop, host, users,
                                                               tenant):
    with scopes_disabled():
        session = Session.objects.create(tenant=tenant, pool=running_desktop.pool,
                                         user=users["member"], desktop=running_desktop,
                                         state=SessionState.READY)

    def graphics(phase: str):
        host_event(host=host, seen_at=timezone.now(), event=DomainEvent(
            kind=EventKind.GRAPHICS, domain=running_desktop.name, detail=phase,
            client_address="192.0.2.7"))
        with scopes_disabled():
            session.refresh_from_db()
        return session.state

    assert graphics("connect") == SessionState.READY  # before authentication: not yet
    assert graphics("initialize") == SessionState.CONNECTED
    assert session.client_address == "192.0.2.7" and session.connected_at is not None
    assert graphics("disconnect") == SessionState.DISCONNECTED
    assert graphics("initialize") == SessionState.CONNECTED


def test_a_closed_connection_is_forgotten_and_subscribers_are_told():
    uri = "test:///default#closing"
    conn = libvirt.open("test:///default")
    told: list[DomainEvent] = []
    with libvirt_connections._connections_lock:
        libvirt_connections._connections[uri] = conn
        libvirt_connections._subscribers[uri] = {told.append}

    libvirt_connections._on_close(conn, libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE, uri)

    assert uri not in libvirt_connections._connections
    assert [event.kind for event in told] == [EventKind.CLOSED]
    conn.close()
