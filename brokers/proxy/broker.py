"""What the proxy asks and tells the broker: tokens, console logins and logouts, and
whether a console's session is still live. Each child opens its own database connections
and closes them after each use (``database_access``)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from django.db import connections
from websockify import token_plugins

from .logmask import PROXY_LOGGER

logger = logging.getLogger(PROXY_LOGGER)


@contextlib.contextmanager
def database_access():
    """Use the database, then close the connections this process opened.

    A console connection lives for hours in its own process; it must not hold a database
    connection all that time. A connection inside a caller's transaction (a test's) is left
    alone: closing it would break that transaction.
    """
    try:
        yield
    finally:
        for conn in connections.all(initialized_only=True):
            if not conn.in_atomic_block:
                conn.close()


# --- tokens and console events ------------------------------------------------------------
class ConsoleTokenPlugin(token_plugins.BasePlugin):
    """A websockify token plugin: a browser ticket's token → the desktop's VNC display.

    Every lookup is one conditional update in the database (``console_token_consume``):
    the token works once, before its ticket expires, while its session is live.
    """

    def __init__(self, src=None):
        super().__init__(src)

    def resolve(self, token: str):
        """The ``ConsoleTarget`` for ``token``, or None (used, expired, unknown, …)."""
        from tenants.scoping import no_scope

        from ..services.tickets import console_token_consume

        with database_access(), no_scope():
            return console_token_consume(token=token)

    def lookup(self, token):
        target = self.resolve(token)
        return None if target is None else (target.host, target.port)


def console_event(target, phase: str, client_address: str) -> None:
    """Tell the broker a browser logged in to (``initialize``) or left (``disconnect``) the
    ticket's desktop, while the ticket's session is live (an ended session's desktop may
    belong to someone else's session by now). Best effort: a failure is logged, never raised
    into the proxy."""
    from tenants.scoping import no_scope, scopes_disabled

    from ..choices import LIVE_SESSION_STATES
    from ..models import Session
    from ..services import session_console_event

    try:
        with database_access(), no_scope(), scopes_disabled():
            session = (Session.objects.select_related("desktop")
                       .filter(pk=target.session_id, state__in=LIVE_SESSION_STATES).first())
            if session is not None and session.desktop is not None:
                session_console_event(desktop=session.desktop, phase=phase,
                                      client_address=client_address)
    except Exception:  # noqa: BLE001 - the console keeps working without the bookkeeping
        logger.exception("session %s: could not record console %s", target.session_id, phase)


# --- consoles that end with their session ---------------------------------------------------
# The websocket close code a browser console gets when its session is over (4000-4999 are
# the application's own); the page shows the close reason.
SESSION_ENDED_CLOSE_CODE = 4001


def console_session_ended(target) -> str | None:
    """Why the ticket's session is over (the close reason the browser shows), or None while
    it is live. A database that does not answer counts as live: nothing can end a session
    while it is down, and a blip must not cut every console."""
    from tenants.scoping import no_scope, scopes_disabled

    from ..selectors import session_end_reason

    try:
        with database_access(), no_scope(), scopes_disabled():
            reason = session_end_reason(session_id=target.session_id)
    except Exception:  # noqa: BLE001 - asked again at the next recheck
        logger.warning("session %s: could not check whether it is still live",
                       target.session_id, exc_info=True)
        return None
    if reason is None:
        return None
    text = f"Your session ended ({reason})" if reason else "Your session ended"
    return text.encode()[:123].decode(errors="ignore")  # a close frame's reason: ≤123 bytes


class SessionWatch:
    """While a console is open, ask every ``interval_s`` whether its session is still live.

    It runs in a thread beside websockify's proxy loop, so a slow database never stalls the
    console. Once the session is over it records why (``ended``) and shuts the VNC
    connection's reading side: websockify's loop then ends as if the desktop had hung up,
    and the handler closes the websocket with ``SESSION_ENDED_CLOSE_CODE`` instead.
    """

    def __init__(self, target, vnc: socket.socket, interval_s: float):
        self.target, self.vnc, self.interval_s = target, vnc, interval_s
        self.ended: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"session-watch-{target.session_id}")

    def __enter__(self) -> SessionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # at most a query in flight

    def why_ended(self) -> str | None:
        """Why the session is over, asking once more now if the watch has not seen it: a
        console that closes for another reason (its desktop reset after the logoff) may
        belong to a session that ended a moment before."""
        return self.ended or console_session_ended(self.target)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            reason = console_session_ended(self.target)
            if reason is not None:
                self.ended = reason
                with contextlib.suppress(OSError):  # the console closed meanwhile
                    self.vnc.shutdown(socket.SHUT_RD)
                return
