"""Abuse limits: open connections per client address and in all (in websockify's parent,
before it forks), and one deadline for a connection's whole handshake (in the child)."""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import signal
import socket
from dataclasses import dataclass

from .logmask import PROXY_LOGGER

logger = logging.getLogger(PROXY_LOGGER)


class HandshakeTimeout(TimeoutError):
    """A connection did not finish its websocket handshake in time.

    A ``TimeoutError``: when it interrupts http.server reading the request, http.server
    logs "Request timed out" and closes the connection."""


class HandshakeDeadline:
    """One deadline for a connection's whole handshake: TLS, the HTTP upgrade, the Origin
    and token checks and the connection to the display, however slowly the client trickles
    its bytes. ``SIGALRM`` in the forked child (its one thread) raises ``HandshakeTimeout``
    from whatever is waiting; ``disarm`` when the console starts."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._armed = False
        self._previous = signal.SIG_DFL

    def arm(self) -> None:
        if self.seconds <= 0:
            return

        def expire(_signum, _frame):
            raise HandshakeTimeout(f"no websocket handshake within {self.seconds:g} s")

        self._previous = signal.signal(signal.SIGALRM, expire) or signal.SIG_DFL
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        self._armed = True

    def disarm(self) -> None:
        if not self._armed:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self._armed = False


@dataclass(frozen=True)
class Refusal:
    status: int
    phrase: str
    message: str

    def response(self) -> bytes:
        body = self.message.encode() + b"\n"
        return (f"HTTP/1.1 {self.status} {self.phrase}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 10\r\nConnection: close\r\n\r\n"
                ).encode() + body


class ConnectionLimits:
    """Caps on open connections, per client address and in all, kept in websockify's parent
    process, which accepts every connection and forks one child for each.

    ``admit`` runs at accept time, before the fork: it counts the parent's live children by
    the address each was accepted from. websockify forks exactly one child for each
    connection ``accept()`` returns, before it accepts again, so the children that are new
    at the next ``admit`` belong to the address admitted last. 0 means no cap.
    """

    def __init__(self, *, max_connections: int, max_per_address: int,
                 children=multiprocessing.active_children):
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self._live_children = children
        self._address_of: dict = {}  # live child process → client address
        self._last_admitted: str | None = None

    def _count(self) -> None:
        self._address_of = {child: self._address_of.get(child, self._last_admitted)
                            for child in self._live_children()}
        self._last_admitted = None

    def admit(self, address: str) -> Refusal | None:
        """None to let the connection in, else how to refuse it."""
        self._count()
        if self.max_connections and len(self._address_of) >= self.max_connections:
            return Refusal(503, "Service Unavailable",
                           f"The console proxy is at its limit of {self.max_connections} "
                           "connections; try again shortly.")
        from_address = sum(1 for known in self._address_of.values() if known == address)
        if self.max_per_address and from_address >= self.max_per_address:
            return Refusal(429, "Too Many Requests",
                           f"Too many console connections from your address (at most "
                           f"{self.max_per_address}); close one and try again.")
        self._last_admitted = address
        return None


class AdmittingListener(socket.socket):
    """The proxy's listening socket: ``accept()`` refuses a connection over the limits
    before websockify's loop forks a child for it.

    The refusal is answered at once without reading the request, so no token is ever seen;
    on a wss:// listener (TLS only) it is just closed, plain HTTP being no answer there.
    websockify's loop takes EINTR from ``accept()`` as "nothing accepted" and goes round.
    """

    limits: ConnectionLimits
    answer_in_http: bool

    def accept(self):
        conn, address = super().accept()
        refusal = self.limits.admit(address[0])
        if refusal is None:
            return conn, address
        logger.warning("console connection from %s refused: %s", address[0], refusal.message)
        refuse(conn, refusal.response() if self.answer_in_http else b"")
        raise InterruptedError(errno.EINTR, "refused by the console proxy's limits")


def refuse(conn: socket.socket, answer: bytes) -> None:
    """Answer and close without ever blocking the accept loop."""
    with contextlib.closing(conn):
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.send(answer)
        # Read what the client already sent: closing on unread data would reset the
        # connection, and a reset can destroy the answer before the client reads it.
        with contextlib.suppress(OSError):
            conn.recv(65536)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
