"""The browser console proxy (brokers/proxy/, manage.py console_proxy), no hypervisor needed.

Tickets come from ``ticket_issue`` on the simulated host (the ``browser_ticket`` fixture,
conftest.py); that host has no VNC port, so the tests give the ticket one: a small fake VNC
server's, which answers with an RFB banner (proxy_helpers.py). Requests go through
websockify's real request handler (in this process), or through a real
``manage.py console_proxy`` process that forks a child per connection. Serving wss://:
test_console_proxy_tls.py.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import socket
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connections
from django.test import RequestFactory
from django.utils import timezone
from websockify.auth_plugins import InvalidOriginError

from brokers.choices import SessionState, TicketKind
from brokers.models import ConnectionTicket, Session
from brokers.proxy import (
    SESSION_ENDED_CLOSE_CODE,
    AdmittingListener,
    ConnectionLimits,
    ConsoleTokenPlugin,
    OriginCheck,
    TokenMaskFilter,
    build_server,
    console_session_ended,
    install_token_mask,
    mask_tokens,
    origin_allowed,
)
from brokers.services import ConsoleTarget, session_end, token_hash
from brokers.views import console_proxy_url, warn_mixed_content_once
from tenants.scoping import scopes_disabled
from tests.brokers.proxy_helpers import (
    PORTAL,
    RFB_BANNER,
    closed_by_peer,
    fake_vnc,
    free_port,
    proxy_process,
    read_all,
    status_of,
    upgrade_request,
    ws_handshake,
)
from tests.e2e.clients import ConsoleWebsocket
from tests.processes import wait_for


# --- helpers --------------------------------------------------------------------------------
def through_handler(server, path: str, origin: str | None) -> bytes:
    """One connection through websockify's request handler, in this process, the way a
    forked proxy child runs it (top_new_client); returns what the browser received."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(upgrade_request(port, path, origin))
            accepted, address = listener.accept()
            with accepted:
                server.top_new_client(accepted, address)
            return read_all(client, timeout_s=2)


def serve_one(server, client):
    """One connection through websockify's request handler in this process, the way a
    forked proxy child runs it, while ``client(port)`` plays the browser in a thread (the
    handler keeps this one: its handshake deadline is a signal). Returns what ``client``
    returned."""
    outcome = {}

    def play():
        try:
            outcome["value"] = client(port)
        except BaseException as error:  # noqa: BLE001 - re-raised below, in the test
            outcome["error"] = error
        finally:
            connections.close_all()  # this thread's own, before the test database goes

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        browser = threading.Thread(target=play, daemon=True)
        browser.start()
        listener.settimeout(10)
        accepted, address = listener.accept()
        with accepted:
            server.top_new_client(accepted, address)
        browser.join(timeout=20)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def partial_upgrade(port: int, *, source: str = "127.0.0.1") -> socket.socket:
    """A connection that starts a websocket upgrade and never finishes its headers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(upgrade_request(port, "/", PORTAL)[:60])
    return sock


def session_state(session) -> Session:
    with scopes_disabled():
        return Session.objects.get(pk=session.pk)


# --- the token plugin -----------------------------------------------------------------------
def test_a_fresh_browser_token_resolves_to_the_desktops_display_once(browser_ticket):
    issued = browser_ticket(5901)
    plugin = ConsoleTokenPlugin()
    assert plugin.lookup(issued.token) == ("127.0.0.1", 5901)
    assert plugin.lookup(issued.token) is None  # replayed
    with scopes_disabled():
        assert ConnectionTicket.objects.get(pk=issued.ticket.pk).used_at is not None


def test_the_simulated_hosts_ticket_has_no_display_to_resolve_to(browser_ticket):
    issued = browser_ticket(port=None)
    assert ConsoleTokenPlugin().lookup(issued.token) is None


@pytest.mark.parametrize("case", ["expired", "unknown", "native", "ended", "empty", "huge"])
def test_tokens_that_must_not_open_a_console(case, browser_ticket, session, users):
    issued = browser_ticket(5901)
    token = issued.token
    with scopes_disabled():
        if case == "expired":
            ConnectionTicket.objects.filter(pk=issued.ticket.pk).update(
                expires_at=timezone.now() - timedelta(seconds=1))
        elif case == "unknown":
            token = secrets.token_urlsafe(32)
        elif case == "native":
            # A native (.vv) ticket row carrying a token hash: the kind alone refuses it.
            token = secrets.token_urlsafe(32)
            ConnectionTicket.objects.create(
                tenant=session.tenant, session=session, desktop=session.desktop,
                kind=TicketKind.NATIVE, protocol="vnc", host="127.0.0.1", port=5901,
                token_hash=token_hash(token), password_applied=True, issued_by=users["member"],
                expires_at=timezone.now() + timedelta(seconds=60))
        elif case == "ended":
            session_end(session=session, actor=users["member"])
        elif case == "empty":
            token = ""
        elif case == "huge":
            token = token * 20
    assert ConsoleTokenPlugin().lookup(token) is None


# --- Origin ---------------------------------------------------------------------------------
@pytest.mark.parametrize("origin, allowed", [
    ("http://portal.test:8000", True),
    ("HTTP://Portal.Test:8000", True),
    ("http://portal.test:8000/", True),
    ("http://portal.test:8001", False),
    ("https://portal.test:8000", False),
    ("http://portal.test", False),
    ("http://evil.test:8000", False),
    ("http://portal.test.evil.test:8000", False),
    ("null", False),
    ("", False),
    (None, False),
])
def test_only_the_allowed_origin_may_open_a_console(origin, allowed):
    check = OriginCheck(PORTAL)
    headers = {} if origin is None else {"Origin": origin}
    if allowed:
        check.authenticate(headers=headers, target_host=None, target_port=None)
    else:
        with pytest.raises(InvalidOriginError):
            check.authenticate(headers=headers, target_host=None, target_port=None)


def test_origin_patterns_default_ports_and_wildcards():
    assert origin_allowed("https://vdi.example.com", ["https://vdi.example.com:443"])
    assert origin_allowed("https://vdi.example.com:443", ["https://vdi.example.com"])
    assert not origin_allowed("https://vdi.example.com:8443", ["https://vdi.example.com"])
    # Development: the dev server's port varies.
    assert origin_allowed("http://127.0.0.1:8123", ["http://127.0.0.1:*"])
    assert origin_allowed("http://[::1]:8000", ["http://[::1]:*"])
    assert not origin_allowed("http://127.0.0.2:8123", ["http://127.0.0.1:*"])
    assert not origin_allowed("http://127.0.0.1:*", ["http://127.0.0.1:*"])


def test_the_default_allowed_origins_are_the_portals_hosts(settings):
    # The test profile is a development one: its ALLOWED_HOSTS on any port.
    allowed = settings.VDI["CONSOLE_ALLOWED_ORIGINS"]
    assert "http://127.0.0.1:*" in allowed and "http://localhost:*" in allowed
    assert not any("testserver" in origin for origin in allowed)


# --- log masking ----------------------------------------------------------------------------
def test_the_mask_rewrites_tokens_in_messages_arguments_and_tracebacks():
    token = secrets.token_urlsafe(32)
    assert mask_tokens(f"GET /?token={token}&x=1 HTTP/1.1") == "GET /?token=***&x=1 HTTP/1.1"
    assert mask_tokens(f"Path: '/websockify?token={token}'") == "Path: '/websockify?token=***'"
    assert mask_tokens(f"Token '{token}' not found") == "Token '***' not found"
    assert mask_tokens(f"/?token%3D{token}") == "/?token%3D***"

    try:
        raise ValueError(f"bad path /?token={token}")
    except ValueError:
        record = logging.LogRecord("websocket", logging.INFO, __file__, 1, "Path: %s",
                                   (f"/?token={token}",), sys.exc_info())
    assert TokenMaskFilter().filter(record) is True
    rendered = logging.Formatter("%(message)s").format(record)
    assert token not in rendered
    assert "Path: /?token=***" in rendered and "bad path /?token=***" in rendered


def test_a_real_connection_through_the_proxy_logs_no_token(browser_ticket, session, caplog):
    install_token_mask()
    caplog.set_level(logging.DEBUG)
    with fake_vnc() as (vnc_port, served):
        issued = browser_ticket(vnc_port)
        server = build_server(listen_host="127.0.0.1", listen_port=free_port(),
                              origins=[PORTAL], verbose=True)
        received = through_handler(server, f"/?token={issued.token}", PORTAL)
        assert status_of(received) == 101, received
        assert RFB_BANNER in received  # the desktop's display, through the websocket
        assert len(served) == 1

        # The same token again: refused before anything reaches the display.
        replay = through_handler(server, f"/?token={issued.token}", PORTAL)
        assert status_of(replay) == 403, replay
        assert len(served) == 1

    text = caplog.text
    assert issued.token not in text
    assert "token=***" in text  # websockify logged the path: masked
    assert "console token refused" in text


def test_a_wrong_origin_is_refused_before_the_token_is_used(browser_ticket):
    with fake_vnc() as (vnc_port, served):
        issued = browser_ticket(vnc_port)
        server = build_server(listen_host="127.0.0.1", listen_port=free_port(),
                              origins=[PORTAL])
        for origin in ("http://evil.test", None):
            refused = through_handler(server, f"/?token={issued.token}", origin)
            assert status_of(refused) == 403, refused
        assert served == []
        with scopes_disabled():
            assert ConnectionTicket.objects.get(pk=issued.ticket.pk).used_at is None
        # The user's own page still gets in with it.
        assert status_of(through_handler(server, f"/?token={issued.token}", PORTAL)) == 101


def test_the_proxy_tells_the_broker_when_a_browser_connects_and_leaves(browser_ticket, session):
    with fake_vnc() as (vnc_port, _served):
        issued = browser_ticket(vnc_port)
        server = build_server(listen_host="127.0.0.1", listen_port=free_port(),
                              origins=[PORTAL])
        assert session_state(session).state == SessionState.READY
        assert status_of(through_handler(server, f"/?token={issued.token}", PORTAL)) == 101
    # The fake display hung up at once: connected, then disconnected, from the browser's
    # address.
    fresh = session_state(session)
    assert fresh.state == SessionState.DISCONNECTED
    assert fresh.connected_at is not None and fresh.client_address == "127.0.0.1"


# --- consoles end with their session --------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ended_by, label", [("member", "Ended by the user"),
                                             ("admin", "Ended by an administrator")])
def test_an_open_console_is_closed_with_the_reason_once_its_session_ends(
        ended_by, label, browser_ticket, session, users, settings):
    """The proxy's session watch sees the session end and closes the websocket with 4001
    and the reason, within a recheck (0.5 s here); the display's connection closes too."""
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_RECHECK_S": 0.5}
    held = []
    with fake_vnc(held=held) as (vnc_port, _served):
        issued = browser_ticket(vnc_port)
        server = build_server(listen_host="127.0.0.1", listen_port=free_port(),
                              origins=[PORTAL])

        def browser(port):
            with ConsoleWebsocket("127.0.0.1", port, f"/?token={issued.token}", PORTAL) as ws:
                assert ws.status == 101, ws.response
                ws.read_until(RFB_BANNER)
                with scopes_disabled():  # elsewhere: the API, an admin, the idle timeout
                    session_end(session=session, actor=users[ended_by])
                ended = time.monotonic()
                code, reason = ws.wait_closed(timeout_s=10)
                return code, reason, time.monotonic() - ended

        code, reason, after_s = serve_one(server, browser)
        assert (code, reason) == (SESSION_ENDED_CLOSE_CODE, f"Your session ended ({label})")
        assert code == 4001
        assert after_s < 0.5 + 1.5, f"cut {after_s:.2f} s after the end"
        assert closed_by_peer(held[0], 5)  # the display's side is closed as well
    fresh = session_state(session)
    assert (fresh.state, fresh.end_reason) == (SessionState.ENDED,
                                               "user" if ended_by == "member" else "admin")


@pytest.mark.django_db(transaction=True)
def test_a_display_that_goes_with_its_session_still_tells_the_browser_why(
        browser_ticket, session, users, settings):
    """The desktop reset after a logoff closes the display before the next recheck (30 s
    away here): the proxy asks once more as the display hangs up, and the browser gets the
    session's end, not "Target closed"."""
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_RECHECK_S": 30}
    held = []
    with fake_vnc(held=held) as (vnc_port, _served):
        issued = browser_ticket(vnc_port)
        server = build_server(listen_host="127.0.0.1", listen_port=free_port(),
                              origins=[PORTAL])

        def browser(port):
            with ConsoleWebsocket("127.0.0.1", port, f"/?token={issued.token}", PORTAL) as ws:
                ws.read_until(RFB_BANNER)
                with scopes_disabled():
                    session_end(session=session, actor=users["member"])
                held[0].close()  # the desktop is reset
                return ws.wait_closed(timeout_s=10)

        assert serve_one(server, browser) == (SESSION_ENDED_CLOSE_CODE,
                                              "Your session ended (Ended by the user)")


@pytest.mark.django_db(transaction=True)
def test_a_live_sessions_console_stays_open_across_rechecks(browser_ticket, session, settings):
    """A bounded wait: 1.5 s spans five rechecks (0.3 s apart) of a live session, and a cut
    would come within one; it outlasts the handshake deadline (0.5 s here) too, which ends
    with the handshake. Then the browser leaves and the session is disconnected."""
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_RECHECK_S": 0.3,
                    "CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S": 0.5}
    with fake_vnc(held=[]) as (vnc_port, _served):
        issued = browser_ticket(vnc_port)
        server = build_server(listen_host="127.0.0.1", listen_port=free_port(),
                              origins=[PORTAL])

        def browser(port):
            with ConsoleWebsocket("127.0.0.1", port, f"/?token={issued.token}", PORTAL) as ws:
                ws.read_until(RFB_BANNER)
                return ws.wait_closed(timeout_s=1.5)

        assert serve_one(server, browser) == (None, "")
    assert session_state(session).state == SessionState.DISCONNECTED


def test_the_recheck_reads_the_session_and_a_silent_database_keeps_consoles(
        session, users, monkeypatch):
    target = ConsoleTarget(ticket_id="t", session_id=str(session.pk), host="127.0.0.1",
                           port=5901)
    assert console_session_ended(target) is None  # live
    with scopes_disabled():
        session_end(session=session, actor=users["admin"])
    assert console_session_ended(target) == "Your session ended (Ended by an administrator)"
    gone = ConsoleTarget(ticket_id="t", session_id=str(uuid.uuid4()), host="h", port=1)
    assert console_session_ended(gone) == "Your session ended"

    def unreachable(**_kwargs):
        raise OperationalError("the database does not answer")

    monkeypatch.setattr("brokers.selectors.session_end_reason", unreachable)
    assert console_session_ended(target) is None  # asked again at the next recheck


# --- abuse limits -----------------------------------------------------------------------------
class FakeChildren:
    """Stands in for multiprocessing.active_children(): the parent's live handler processes."""

    def __init__(self):
        self.alive = []

    def __call__(self):
        return list(self.alive)

    def fork(self):  # what websockify does with a connection accept() let through
        child = object()
        self.alive.append(child)
        return child


def test_the_limits_count_live_children_per_address_and_in_all():
    children = FakeChildren()
    limits = ConnectionLimits(max_connections=3, max_per_address=2, children=children)

    assert limits.admit("192.0.2.1") is None
    first = children.fork()
    assert limits.admit("192.0.2.1") is None
    children.fork()
    refusal = limits.admit("192.0.2.1")
    assert refusal.status == 429 and b"429 Too Many Requests" in refusal.response()
    assert limits.admit("192.0.2.2") is None  # another address: its own count
    children.fork()
    refusal = limits.admit("192.0.2.3")
    assert refusal.status == 503 and b"503 Service Unavailable" in refusal.response()

    children.alive.remove(first)  # a console closed: its place is free again
    assert limits.admit("192.0.2.1") is None
    assert limits.admit("192.0.2.3") is None  # the admitted one was never forked: not counted


@pytest.mark.parametrize("tls_only", [False, True])
def test_the_listener_answers_a_refusal_at_once_and_never_hands_it_to_websockify(tls_only):
    """In-process, the listening socket websockify's loop accepts from: the refused
    connection is answered (HTTP, or just closed on a TLS-only listener) and accept()
    raises EINTR, which the loop takes as "nothing accepted"."""
    children = FakeChildren()
    plain = socket.create_server(("127.0.0.1", 0))
    listener = AdmittingListener(plain.family, plain.type, plain.proto, fileno=plain.detach())
    listener.limits = ConnectionLimits(max_connections=0, max_per_address=1, children=children)
    listener.answer_in_http = not tls_only
    port = listener.getsockname()[1]
    with listener, socket.create_connection(("127.0.0.1", port), timeout=5) as first, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as second:
        accepted, _address = listener.accept()
        children.fork()
        second.sendall(upgrade_request(port, "/?token=secret", PORTAL))
        with pytest.raises(InterruptedError) as refused:
            listener.accept()
        assert refused.value.errno == errno.EINTR
        answer = read_all(second, timeout_s=5)
        accepted.close()
        assert first.recv(1) == b""
    if tls_only:
        assert answer == b""
    else:
        assert status_of(answer) == 429 and b"Retry-After: 10" in answer
        assert b"secret" not in answer


def test_zero_means_no_limit():
    children = FakeChildren()
    limits = ConnectionLimits(max_connections=0, max_per_address=0, children=children)
    for _ in range(50):
        assert limits.admit("192.0.2.1") is None
        children.fork()


def test_behind_a_load_balancer_the_per_address_cap_is_left_to_it(settings):
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_TRUST_FORWARDED_FOR": True}
    server = build_server(listen_host="127.0.0.1", listen_port=free_port(), origins=[PORTAL])
    assert server.limits.max_per_address == 0
    assert server.limits.max_connections == settings.VDI["CONSOLE_PROXY_MAX_CONNECTIONS"] > 0


@pytest.mark.parametrize("client", ["silent", "trickling"])
def test_a_handshake_that_does_not_finish_in_time_is_cut_before_the_token_is_used(
        client, browser_ticket, settings):
    """One deadline for the whole handshake (1 s here), however the client sends: a
    request that stops halfway, or headers trickled a byte at a time."""
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S": 1}
    issued = browser_ticket(5901)
    server = build_server(listen_host="127.0.0.1", listen_port=free_port(), origins=[PORTAL])
    request = upgrade_request(0, f"/?token={issued.token}", PORTAL)
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname(), timeout=10) as browser:
        browser.sendall(request[:40])

        def trickle():
            for byte in request[40:-4]:
                if stop.wait(0.1):
                    return
                with contextlib.suppress(OSError):
                    browser.send(bytes([byte]))

        trickler = threading.Thread(target=trickle, daemon=True)
        if client == "trickling":
            trickler.start()
        accepted, address = listener.accept()
        started = time.monotonic()
        with accepted:
            server.top_new_client(accepted, address)
        took = time.monotonic() - started
        stop.set()
        assert closed_by_peer(browser, 5)
    assert 0.9 <= took < 2.5, took
    with scopes_disabled():
        assert ConnectionTicket.objects.get(pk=issued.ticket.pk).used_at is None


@pytest.mark.django_db(transaction=True)
def test_the_proxy_process_caps_connections_per_address_and_in_all(browser_ticket, tmp_path):
    """The real command: over a cap, the parent answers 429 (one address) or 503 (all)
    without reading the request, so the token in it stays unused and out of the log;
    connections that never finish their handshake are ended by the deadline (3 s here),
    which frees their places."""
    port = free_port()
    env = {"VDI_CONSOLE_PROXY_MAX_PER_ADDRESS": "2", "VDI_CONSOLE_PROXY_MAX_CONNECTIONS": "3",
           "VDI_CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S": "3"}
    with fake_vnc() as (vnc_port, served), proxy_process(port, tmp_path, env=env) as log:
        issued = browser_ticket(vnc_port)
        path = f"/?token={issued.token}"
        opened = time.monotonic()
        holders = [partial_upgrade(port), partial_upgrade(port)]
        with ConsoleWebsocket("127.0.0.1", port, path, PORTAL, source="127.0.0.1") as ws:
            assert ws.status == 429, (ws.response, log.read_text())
        holders.append(partial_upgrade(port, source="127.0.0.2"))  # its own address: in
        with ConsoleWebsocket("127.0.0.1", port, path, PORTAL, source="127.0.0.3") as ws:
            assert ws.status == 503, (ws.response, log.read_text())
        with scopes_disabled():
            assert ConnectionTicket.objects.get(pk=issued.ticket.pk).used_at is None
        assert served == []

        for holder in holders:
            with holder:
                assert closed_by_peer(holder, 3 + 3), log.read_text()
        ended_after = time.monotonic() - opened
        assert 2.5 <= ended_after < 3 + 3, ended_after

        def answered():  # the parent reaps the ended children as they exit
            console = ConsoleWebsocket("127.0.0.1", port, path, PORTAL)
            if console.status in (429, 503):
                console.close()
                return None
            return console

        with wait_for(answered, 10, lambda: f"a free place (log:\n{log.read_text()})") as ws:
            assert ws.status == 101, ws.response
            assert RFB_BANNER in ws.read_until(RFB_BANNER)
        output = log.read_text()
    assert issued.token not in output
    assert "refused: Too many console connections from your address" in output
    assert "refused: The console proxy is at its limit of 3 connections" in output
    assert "Request timed out" in output


# --- the management command -----------------------------------------------------------------
def test_the_command_refuses_a_bad_listen_address():
    with pytest.raises(CommandError, match="HOST:PORT"):
        call_command("console_proxy", "--listen", "nonsense")


def test_the_command_refuses_to_run_without_allowed_origins(settings):
    settings.VDI = {**settings.VDI, "CONSOLE_ALLOWED_ORIGINS": []}
    with pytest.raises(CommandError, match="VDI_CONSOLE_ALLOWED_ORIGINS"):
        call_command("console_proxy", "--listen", f"127.0.0.1:{free_port()}")


@pytest.mark.django_db(transaction=True)
def test_the_proxy_process_serves_each_browser_from_a_forked_child(browser_ticket, session,
                                                                    tmp_path):
    """The real command: a child process per connection, each with its own database
    connection, against the test database (PostgreSQL or SQLite)."""
    port = free_port()
    with fake_vnc() as (vnc_port, served), proxy_process(port, tmp_path) as log:
        assert f"console proxy listening on ws://127.0.0.1:{port}/ (no TLS" in log.read_text()
        first, second = browser_ticket(vnc_port), browser_ticket(vnc_port)

        status, received = ws_handshake(port, f"/?token={first.token}", PORTAL, read_s=3)
        assert status == 101 and RFB_BANNER in received, (received, log.read_text())
        assert ws_handshake(port, f"/?token={first.token}", PORTAL)[0] == 403  # replayed
        assert ws_handshake(port, f"/?token={second.token}", "http://evil.test")[0] == 403
        status, received = ws_handshake(port, f"/?token={second.token}", PORTAL, read_s=3)
        assert status == 101 and RFB_BANNER in received, (received, log.read_text())
        assert len(served) == 2

        wait_for(lambda: session_state(session).state == SessionState.DISCONNECTED, 10,
                 lambda: f"the proxy's disconnect event (log:\n{log.read_text()})")
        output = log.read_text()
    assert first.token not in output and second.token not in output
    assert "token=***" in output
    assert "Invalid Origin" in output and "console token refused" in output


# --- the portal's console page --------------------------------------------------------------
@pytest.fixture
def member_client(client, users):
    client.force_login(users["member"])
    return client


@pytest.fixture
def applied(passwords_apply):
    """The worker sets the password, as on a real host (the simulated one can't)."""
    return passwords_apply


def console_url(session) -> str:
    return f"/t/acme/sessions/{session.pk}/console/"


def console_config(response) -> dict:
    import json
    import re

    match = re.search(r'<script id="console-config" type="application/json">(.*?)</script>',
                      response.content.decode(), re.S)
    assert match, response.content.decode()
    return json.loads(match.group(1))


def test_the_console_page_hands_novnc_a_one_time_token_and_is_never_cached(
        member_client, session, applied, run_tasks):
    with run_tasks():
        response = member_client.get(console_url(session))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    config = console_config(response)
    assert config["url"].startswith("ws://testserver:6080/?token=")
    token = config["url"].split("token=", 1)[1]
    assert len(config["password"]) == 8  # VNC
    page = response.content.decode()
    assert page.count(token) == 1 and page.count(config["password"]) == 1  # the config only
    assert "/static/novnc/core/rfb.js" in page and 'id="status"' in page
    with scopes_disabled():
        ticket = ConnectionTicket.objects.get(session=session, kind=TicketKind.BROWSER)
    assert ticket.token_hash == token_hash(token) and ticket.used_at is None
    with scopes_disabled():  # the simulated host has no display: give the ticket one
        ConnectionTicket.objects.filter(pk=ticket.pk).update(port=5901)
    assert ConsoleTokenPlugin().lookup(token) == ("127.0.0.1", 5901)  # the proxy takes it


def test_the_console_page_uses_the_configured_proxy_url(member_client, session, applied,
                                                        run_tasks, settings):
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_URL": "wss://console.example.com/ws"}
    with run_tasks():
        config = console_config(member_client.get(console_url(session)))
    assert config["url"].startswith("wss://console.example.com/ws?token=")


TLS_ON = {"CONSOLE_PROXY_TLS_CERT": "/etc/vdi/console.crt",
          "CONSOLE_PROXY_TLS_KEY": "/etc/vdi/console.key"}


def test_an_http_page_dials_wss_when_the_proxy_serves_tls(member_client, session, applied,
                                                          run_tasks, settings):
    settings.VDI = {**settings.VDI, **TLS_ON}
    with run_tasks():
        response = member_client.get(console_url(session))
    assert console_config(response)["url"].startswith("wss://testserver:6080/?token=")
    assert "wss://testserver:6080" in response["Content-Security-Policy"]  # connect-src


@pytest.mark.parametrize("proxy_tls, page_https, configured, expected", [
    (False, False, "", "ws://testserver:6080/"),
    (False, True, "", "wss://testserver:6080/"),
    (True, False, "", "wss://testserver:6080/"),
    (True, True, "", "wss://testserver:6080/"),
    (True, False, "wss://console.example.com/ws", "wss://console.example.com/ws"),
    (False, True, "wss://console.example.com/ws", "wss://console.example.com/ws"),
])
def test_the_console_proxy_url(proxy_tls, page_https, configured, expected, settings):
    """A configured URL wins; else wss:// when the proxy serves TLS or the page is https."""
    settings.VDI = {**settings.VDI, **(TLS_ON if proxy_tls else {}),
                    "CONSOLE_PROXY_URL": configured}
    request = RequestFactory().get("/", secure=page_https)
    assert console_proxy_url(request) == expected


def test_an_https_portal_with_a_ws_proxy_url_warns_once(settings, caplog):
    warn_mixed_content_once.cache_clear()  # once per process: forget earlier tests' warnings
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_URL": "ws://console.example.com:6080/"}
    factory = RequestFactory()
    assert console_proxy_url(factory.get("/")) == "ws://console.example.com:6080/"
    assert not caplog.records  # an http page may dial ws://
    for _ in range(3):
        console_proxy_url(factory.get("/", secure=True))
    warnings = [r for r in caplog.records if "mixed content" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "ws://console.example.com:6080/" in warnings[0].getMessage()

    caplog.clear()
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_URL": "wss://console.example.com/"}
    console_proxy_url(factory.get("/", secure=True))
    assert not caplog.records
    warn_mixed_content_once.cache_clear()


def test_on_a_simulated_host_the_page_says_so_instead_of_connecting(member_client, session,
                                                                    run_tasks):
    with run_tasks():
        response = member_client.get(console_url(session))
    page = response.content.decode()
    assert response.status_code == 200 and 'id="simulated-notice"' in page
    assert "console-config" not in page and "rfb.js" not in page


def test_a_pending_session_goes_back_to_its_page(member_client, api, make_pool, host):
    pool = make_pool(min_ready=0)
    body = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    assert body["state"] == "pending"  # nothing ran the provisioning
    response = member_client.get(f"/t/acme/sessions/{body['session']}/console/")
    assert response.status_code == 302
    assert response["Location"] == f"/t/acme/sessions/{body['session']}/"


def test_an_ended_session_shows_a_message(member_client, session, users):
    with scopes_disabled():
        session_end(session=session, actor=users["member"])
    response = member_client.get(console_url(session))
    assert response.status_code == 200
    assert "This session has ended" in response.content.decode()
    assert "console-config" not in response.content.decode()


def test_no_worker_in_time_means_a_message_and_back(member_client, session, monkeypatch):
    monkeypatch.setattr("brokers.views.ticket_issue", lambda **kwargs: None)
    response = member_client.get(console_url(session), follow=True)
    assert response.redirect_chain[-1][0] == f"/t/acme/sessions/{session.pk}/"
    assert "did not answer in time" in response.content.decode()


def test_only_the_sessions_user_opens_its_console(client, users, session):
    client.force_login(users["admin"])
    assert client.get(console_url(session)).status_code == 404
    client.force_login(users["outsider"])
    assert client.get(console_url(session)).status_code == 404


def test_the_session_page_and_the_api_lead_to_the_browser_console(member_client, api, session,
                                                                 run_tasks):
    page = member_client.get(f"/t/acme/sessions/{session.pk}/").content.decode()
    assert f'href="{console_url(session)}"' in page and "Open in browser" in page
    with run_tasks():
        body = api("member").post(f"/api/v1/tenants/acme/sessions/{session.pk}/ticket/").json()
    assert body["console_url"] == f"http://testserver{console_url(session)}"
