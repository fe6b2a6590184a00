"""Access ends when access ends, on the lab's real guests: every kind of open console is cut
once its session ends (issue 14; docs/connecting.md, "What cuts a console").

- a browser console, through a real ``manage.py console_proxy``: the proxy closes it;
- a native SPICE client: the password change with ``connected='disconnect'`` drops it;
- a native VNC client: it cannot reach the display at all, which listens only on the
  address the proxies dial, never on the console address clients are given.

Sessions end for other reasons than their user's or an admin's end (docs/security.md,
"Access ends when access ends"), and their consoles go with them: a member removed from
the organisation, an organisation suspended, a desktop taken over by an admin.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from brokers.choices import SessionState, TicketKind
from brokers.models import Session
from brokers.proxy import SESSION_ENDED_CLOSE_CODE
from brokers.services import ticket_issue
from tenants.choices import TenantStatus
from tenants.models import Membership
from tenants.scoping import scopes_disabled
from tests.brokers.test_console_proxy import free_port
from tests.e2e.clients import (
    ConsoleWebsocket,
    SpiceSession,
    spice_login,
    vnc_login_over,
)
from tests.e2e.lab import desktop_in, tail
from tests.processes import ROOT, running, wait_for
from vdi.choices import DesktopState

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PORTAL = "http://portal.test:8000"  # the origin the proxy is told to allow
RFB_BANNER = b"RFB 003.008"
RECHECK_S = 2  # VDI_CONSOLE_PROXY_RECHECK_S's default, which these proxies run with
ENDED_BY_ADMIN = "Your session ended (Ended by an administrator)"


@contextlib.contextmanager
def console_proxy(tmp_path):
    """A real ``manage.py console_proxy`` with its default limits and recheck interval."""
    port = free_port()
    command = [sys.executable, str(ROOT / "manage.py"), "console_proxy", "--listen",
               f"127.0.0.1:{port}"]
    with running(command, tmp_path / "proxy.log", "console proxy listening",
                 {"VDI_CONSOLE_ALLOWED_ORIGINS": PORTAL}) as log:
        yield port, log


def ready_session(api, pool, worker) -> tuple[dict, Session]:
    """The member's ready session on a running desktop of ``pool``: (its ticket, the row)."""
    desktop_in(pool, DesktopState.RUNNING, worker)
    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200, response.content
    ticket = response.json()
    assert ticket["password_applied"] is True, ticket
    with scopes_disabled():
        return ticket, Session.objects.select_related("desktop", "pool").get(
            pk=ticket["session"])


def established_with(port: int) -> int:
    """How many TCP connections are established to local ``port`` (QEMU's display), from
    the kernel's table: the proxy's side of a console."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, _remote, state = row.split()[1:4]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def live_graphics(libvirt_conn, name: str) -> dict[str, ET.Element]:
    root = ET.fromstring(libvirt_conn.lookupByName(name).XMLDesc(0))
    return {g.get("type"): g for g in root.findall("./devices/graphics")}


@pytest.mark.parametrize("on_logoff", ["keep", "recycle"])
def test_a_browser_console_is_closed_by_the_proxy_within_seconds_of_the_sessions_end(
        on_logoff, lab_pool, api, users, worker, libvirt_conn, tmp_path):
    """How: through a real proxy, a websocket client does what noVNC does (the upgrade with
    the portal's Origin, RFB with the ticket's VNC password, ClientInit) and reads QEMU's
    ServerInit; the kernel's table shows the proxy connected to the display. Then the member
    ends the session (POST sessions/{id}/end/) and the proxy's close frame must arrive
    within one recheck (2 s) plus a margin, with code 4001 and the end's reason; the
    proxy's connection to QEMU is gone too.

    With ``keep`` the desktop stays up and QEMU keeps VNC clients through the console
    revoke's password change, so only the proxy's recheck can cut the console; with
    ``recycle`` the desktop's reset closes the display first, and the proxy still tells
    the browser that the session ended."""
    pool = lab_pool(min_ready=1, on_logoff=on_logoff)
    ticket, session = ready_session(api, pool, worker)
    with scopes_disabled():
        browser = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
    vnc_port = browser.ticket.port

    with console_proxy(tmp_path) as (port, log), \
            ConsoleWebsocket("127.0.0.1", port, f"/?token={browser.token}", PORTAL) as console:
        assert console.status == 101, (console.response, tail(log))
        width, height, _name = vnc_login_over(console, browser.password)
        assert width > 0 and height > 0
        assert established_with(vnc_port) == 1, "the proxy's connection to the display"

        ended = time.monotonic()
        response = api("member").post(f"/api/v1/tenants/acme/sessions/{session.id}/end/")
        assert response.status_code == 200, response.content
        code, reason = console.wait_closed(timeout_s=RECHECK_S + 8)
        took = time.monotonic() - ended
        assert (code, reason) == (SESSION_ENDED_CLOSE_CODE,
                                  "Your session ended (Ended by the user)"), tail(log)
        assert took < RECHECK_S + 3, f"closed {took:.1f} s after the end"
        print(f"\n[timing] session end → browser console closed ({on_logoff}): {took:.2f} s")
        wait_for(lambda: established_with(vnc_port) == 0, 5,
                 lambda: f"the proxy to hang up on the display (log:\n{tail(log)})")
        assert "cut, the session ended" in log.read_text()
        if on_logoff == "keep":  # the cut was the proxy's alone: the desktop still runs
            assert libvirt_conn.lookupByName(session.desktop.name).isActive()
    with scopes_disabled():
        fresh = Session.objects.get(pk=session.id)
    assert (fresh.state, fresh.end_reason) == (SessionState.ENDED, "user")
    assert browser.token not in log.read_text() and browser.password not in tail(worker, 10**6)


def test_a_native_spice_client_is_disconnected_when_its_session_ends(lab_pool, api, worker,
                                                                     libvirt_conn):
    """How: a SPICE client logs in with the session's ticket (the main channel's link, as
    remote-viewer begins) and stays connected; QEMU keeps it (a bounded 1 s look, so that
    the drop below is the session end's doing). The admin ends the session through the API;
    the broker's console revoke sets a fresh, already expired password with
    connected='disconnect' on the live domain, and QEMU must drop the client within 15 s.
    The pool keeps the desktop after a logoff (``keep``), so the domain still runs: the
    password change, not a reset, dropped the client. The session's ticket no longer opens
    the display either."""
    pool = lab_pool(min_ready=1, on_logoff="keep")
    ticket, session = ready_session(api, pool, worker)
    assert ticket["protocol"] == "spice"

    with SpiceSession(ticket["host"], ticket["port"], ticket["password"]) as client:
        assert client.connected_for(1.0), "QEMU dropped a logged-in SPICE client by itself"
        ended = time.monotonic()
        response = api("admin").post(f"/api/v1/tenants/acme/sessions/{session.id}/end/")
        assert response.status_code == 200, response.content
        assert client.wait_disconnected(15), (
            f"the SPICE client is still connected 15 s after the end (worker log:\n"
            f"{tail(worker)})")
        print(f"\n[timing] session end → SPICE client dropped: {time.monotonic() - ended:.2f} s")
    assert libvirt_conn.lookupByName(session.desktop.name).isActive()
    assert spice_login(ticket["host"], ticket["port"], ticket["password"]) is False


def test_vnc_listens_only_where_the_proxies_dial_never_on_the_console_address(
        lab_host, lab_pool, api, users, worker, libvirt_conn, tmp_path):
    """How: the lab host gets a console address (127.0.0.2, what clients are given) apart
    from its VNC listen address (127.0.0.1, what the proxies dial); both are loopback, so
    QEMU can bind either. A desktop defined then has, in its live domain XML, SPICE on the
    console address and VNC on the VNC address only; a TCP connect to the VNC port on the
    console address is refused by the kernel (nothing listens there) while SPICE answers
    there; the session's tickets point SPICE at the console address and the browser's
    VNC at the VNC address, and the browser console works through the proxy."""
    response = api("staff").patch(f"/api/v1/hosts/{lab_host.id}/", {
        "console_address": "127.0.0.2", "vnc_listen_address": "127.0.0.1"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["vnc_listen_address"] == "127.0.0.1"

    pool = lab_pool(min_ready=1)
    ticket, session = ready_session(api, pool, worker)
    desktop = session.desktop
    displays = live_graphics(libvirt_conn, desktop.name)
    for kind, address in (("spice", "127.0.0.2"), ("vnc", "127.0.0.1")):
        assert displays[kind].get("listen") == address, ET.tostring(displays[kind])
        assert [listen.get("address") for listen in displays[kind].findall("listen")] == [
            address]

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", desktop.vnc_port), timeout=5).close()
    assert spice_login("127.0.0.2", desktop.spice_port, "guess") is False  # answers, locked
    assert (ticket["host"], ticket["port"]) == ("127.0.0.2", desktop.spice_port)

    with scopes_disabled():
        browser = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
    assert (browser.ticket.host, browser.ticket.port) == ("127.0.0.1", desktop.vnc_port)
    with console_proxy(tmp_path) as (port, log), \
            ConsoleWebsocket("127.0.0.1", port, f"/?token={browser.token}", PORTAL) as console:
        assert console.status == 101, (console.response, tail(log))
        assert vnc_login_over(console, browser.password)[0] > 0


# --- access that ends otherwise: a member removed, an organisation suspended, a takeover ----
@contextlib.contextmanager
def browser_console(session, user, tmp_path):
    """A browser console on ``session`` as ``user``'s page opens it: a browser ticket, a real
    proxy, the websocket and noVNC's login, with the proxy connected to the display. Yields
    (the console, the proxy's log, the display's VNC port)."""
    with scopes_disabled():
        browser = ticket_issue(session=session, user=user, kind=TicketKind.BROWSER)
    with console_proxy(tmp_path) as (port, log), \
            ConsoleWebsocket("127.0.0.1", port, f"/?token={browser.token}", PORTAL) as console:
        assert console.status == 101, (console.response, tail(log))
        width, height, _name = vnc_login_over(console, browser.password)
        assert width > 0 and height > 0
        assert established_with(browser.ticket.port) == 1, "the proxy's connection to the display"
        yield console, log, browser.ticket.port


def assert_cut(console, log, since: float, reason: str, what: str) -> float:
    """The proxy's close frame arrives within one recheck plus a margin, with 4001 and
    ``reason``, and the proxy hangs up on the display: returns the seconds since ``since``."""
    code, got = console.wait_closed(timeout_s=RECHECK_S + 8)
    took = time.monotonic() - since
    assert (code, got) == (SESSION_ENDED_CLOSE_CODE, reason), tail(log)
    assert took < RECHECK_S + 3, f"closed {took:.1f} s after the {what}"
    print(f"\n[timing] {what} → browser console closed: {took:.2f} s")
    assert "cut, the session ended" in log.read_text()
    return took


def session_row(session) -> Session:
    with scopes_disabled():
        return Session.objects.get(pk=session.pk)


def test_removing_a_member_closes_their_browser_console_within_seconds(
        lab_pool, api, users, worker, tmp_path):
    """How: the member's browser console is open through a real proxy (noVNC's login done,
    ServerInit read, the proxy connected to QEMU's display, as in the session-end test
    above). An admin removes the member (DELETE members/{id}/, 204); the membership's
    removal ends their live sessions as an administrator would, and the proxy's close frame
    must arrive within one recheck (2 s) plus a margin, with 4001 and "Ended by an
    administrator"; the proxy hangs up on the display too. The session row is ended
    (reason ``admin``) and the member is no longer in the organisation. The pool keeps one
    desktop (``max_desktops=1``): one guest for the test."""
    pool = lab_pool(min_ready=1, max_desktops=1, on_logoff="keep")
    _ticket, session = ready_session(api, pool, worker)
    with scopes_disabled():
        membership = Membership.objects.get(tenant=pool.tenant, user=users["member"])

    with browser_console(session, users["member"], tmp_path) as (console, log, vnc_port):
        removed = time.monotonic()
        response = api("admin").delete(f"/api/v1/tenants/acme/members/{membership.id}/")
        assert response.status_code == 204, response.content
        assert_cut(console, log, removed, ENDED_BY_ADMIN, "member's removal")
        wait_for(lambda: established_with(vnc_port) == 0, 5,
                 lambda: f"the proxy to hang up on the display (log:\n{tail(log)})")

    fresh = session_row(session)
    assert (fresh.state, fresh.end_reason) == (SessionState.ENDED, "admin")
    with scopes_disabled():
        assert not Membership.objects.filter(pk=membership.pk).exists()


def test_suspending_the_organisation_drops_a_native_spice_client_and_refuses_connect(
        lab_pool, api, worker, libvirt_conn):
    """How: a SPICE client logs in with the member's ticket and stays connected; QEMU keeps
    it (a bounded 1 s look, so that the drop below is the suspension's doing). Staff suspend
    the organisation (POST tenants/acme/suspend/); its live sessions end, the console revoke
    sets an expired password with connected='disconnect', and QEMU must drop the client
    within 15 s. The pool keeps desktops after a logoff (``keep``) and a suspended
    organisation's pools make no spares, so the domain still runs: the password change, not
    a reset, dropped the client. Then the member's Connect answers 409 ``tenant_suspended``,
    and the old ticket no longer opens the display."""
    pool = lab_pool(min_ready=1, max_desktops=1, on_logoff="keep")
    member = api("member")
    ticket, session = ready_session(api, pool, worker)
    assert ticket["protocol"] == "spice"

    with SpiceSession(ticket["host"], ticket["port"], ticket["password"]) as client:
        assert client.connected_for(1.0), "QEMU dropped a logged-in SPICE client by itself"
        suspended = time.monotonic()
        response = api("staff").post("/api/v1/tenants/acme/suspend/")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == TenantStatus.SUSPENDED
        assert client.wait_disconnected(15), (
            f"the SPICE client is still connected 15 s after the suspension (worker log:\n"
            f"{tail(worker)})")
        print(f"\n[timing] suspension → SPICE client dropped: "
              f"{time.monotonic() - suspended:.2f} s")

    fresh = session_row(session)
    assert (fresh.state, fresh.end_reason) == (SessionState.ENDED, "admin")
    response = member.post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "tenant_suspended", response.content
    assert libvirt_conn.lookupByName(session.desktop.name).isActive()
    assert spice_login(ticket["host"], ticket["port"], ticket["password"]) is False


def test_a_takeover_closes_the_members_browser_console_and_the_admins_ticket_opens_it(
        lab_pool, api, users, worker, libvirt_conn, tmp_path):
    """How: the member's browser console is open through a real proxy (as above). An admin
    takes the desktop over (POST desktops/{id}/takeover/): the member's session ends
    (reason ``admin``, no logoff policy) and the proxy's close frame must arrive within one
    recheck (2 s) plus a margin, with 4001 and "Ended by an administrator"; QEMU keeps VNC
    clients through the takeover ticket's password change, so the cut is the proxy's. The
    admin's fresh ticket, applied to the live domain, opens the same desktop's SPICE display
    (the main channel's link accepts the admin's password) while the member's ticket is
    refused there."""
    pool = lab_pool(min_ready=1, max_desktops=1, on_logoff="keep")
    ticket, session = ready_session(api, pool, worker)

    with browser_console(session, users["member"], tmp_path) as (console, log, vnc_port):
        taken = time.monotonic()
        response = api("admin").post(
            f"/api/v1/tenants/acme/desktops/{session.desktop_id}/takeover/")
        assert response.status_code == 200, response.content
        admins = response.json()
        assert_cut(console, log, taken, ENDED_BY_ADMIN, "takeover")
        wait_for(lambda: established_with(vnc_port) == 0, 5,
                 lambda: f"the proxy to hang up on the display (log:\n{tail(log)})")

    assert admins["desktop"] == str(session.desktop_id) and admins["session"] != str(session.id)
    assert admins["password_applied"] is True, admins
    assert admins["password"] != ticket["password"]
    fresh = session_row(session)
    assert (fresh.state, fresh.end_reason) == (SessionState.ENDED, "admin")
    with scopes_disabled():
        assert Session.objects.get(pk=admins["session"]).user == users["admin"]
    assert libvirt_conn.lookupByName(session.desktop.name).isActive()
    assert spice_login(admins["host"], admins["port"], admins["password"]) is True
    assert spice_login(ticket["host"], ticket["port"], ticket["password"]) is False
