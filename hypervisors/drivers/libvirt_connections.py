"""The libvirt connections of a process, under hypervisors/drivers/libvirt_driver.py: one
cached connection per URI, libvirt's event loop, calls under a timeout and libvirt's errors
as DriverErrors."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

import libvirt
from django.conf import settings

from .base import (
    CertificateError,
    DomainEvent,
    DriverError,
    EventKind,
    NotFound,
    PermanentDriverError,
    TransientDriverError,
    Unsupported,
)
from .tls_probe import tls_refusal

# The driver's logger, as before this module was split from it.
logger = logging.getLogger("hypervisors.drivers.libvirt_driver")

# libvirt prints every error to stderr unless a handler is installed; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_TRANSIENT_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_OPERATION_ABORTED,
}
_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
_UNSUPPORTED_CODES = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}

# Keepalive: a host that misses this many probes this many seconds apart is closed, which
# drops its cached connection; the next call reconnects.
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3

# One connection per URI per process, shared by the worker's threads (libvirt is thread-safe).
_connections: dict[str, libvirt.virConnect] = {}
# Event callbacks per URI, told when the URI's connection closes.
_subscribers: dict[str, set[Callable[[DomainEvent], None]]] = {}
# Each URI opens under its own lock, so a host that hangs while connecting stalls only its own
# callers; the shared lock guards the dictionaries and is never held across a libvirt call.
_open_locks: dict[str, threading.Lock] = {}
_connections_lock = threading.Lock()
# Calls run here so a hung host costs a timeout, not a stuck worker.
_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="libvirt")


_event_loop_lock = threading.Lock()
_event_loop_running = False


def _ensure_event_loop() -> None:
    """Run libvirt's event loop on a thread of its own: keepalive, close callbacks and domain
    events only work while it runs. It must be registered before the first connection."""
    global _event_loop_running
    with _event_loop_lock:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_running = True


def _on_close(conn: libvirt.virConnect, reason: int, uri: str) -> None:
    """The host went away (keepalive timeout, daemon restart): forget the connection so the
    next call opens a new one, and tell subscribers their events stopped. Runs on the event
    thread, so it must not call back into libvirt on this connection."""
    with _connections_lock:
        cached = _connections.get(uri)
        if cached is conn or (cached is not None and not cached.isAlive()):
            _connections.pop(uri, None)
        callbacks = list(_subscribers.pop(uri, ()))
    logger.warning("connection to %s closed (reason %s)", uri, reason)
    for callback in callbacks:
        callback(DomainEvent(kind=EventKind.CLOSED, detail=f"connection closed ({reason})"))


def _classify(error: libvirt.libvirtError) -> DriverError:
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code in _NOT_FOUND_CODES:
        return NotFound(message)
    if code in _UNSUPPORTED_CODES:
        return Unsupported(f"not supported by this host: {message}")
    if error.get_error_domain() == libvirt.VIR_FROM_RPC and "certificate" in message.lower():
        # libvirt's TLS refused the host's certificate or cannot use the worker's own: no
        # retry changes a certificate.
        return CertificateError(message)
    if code in _TRANSIENT_CODES or error.get_error_domain() in (
        libvirt.VIR_FROM_RPC,
        libvirt.VIR_FROM_REMOTE,
    ):
        return TransientDriverError(message)
    return PermanentDriverError(message)


def drop_connection(uri: str) -> None:
    with _connections_lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


class LibvirtConnection:
    """A driver's link to the host at ``uri``: the process's cached connection to it, and
    calls on that connection that give up after ``timeout_s``."""

    def __init__(self, uri: str, timeout_s: float | None = None):
        self.uri = uri
        self.timeout_s = timeout_s or settings.VDI["LIBVIRT_CALL_TIMEOUT_S"]

    # --- plumbing ---------------------------------------------------------------------------
    def _connection(self) -> libvirt.virConnect:
        with _connections_lock:
            open_lock = _open_locks.setdefault(self.uri, threading.Lock())
        with open_lock:
            with _connections_lock:
                conn = _connections.get(self.uri)
            if conn is not None and conn.isAlive():
                return conn
            _ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as error:
                classified = _classify(error)
                reason = tls_refusal(self.uri) if isinstance(classified, CertificateError) else ""
                if reason:
                    classified = CertificateError(f"{classified}: {reason}")
                raise classified from error
            self._watch_connection(conn)
            with _connections_lock:
                _connections[self.uri] = conn
            return conn

    def _watch_connection(self, conn: libvirt.virConnect) -> None:
        # The in-process test driver has no wire to keep alive and never closes on its own.
        if conn.getType() == "TEST":
            return
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        conn.registerCloseCallback(_on_close, self.uri)

    def _call(self, fn: Callable[[libvirt.virConnect], Any]) -> Any:
        def run():
            return fn(self._connection())

        future = _executor.submit(run)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            drop_connection(self.uri)
            raise TransientDriverError(
                f"{self.uri} did not answer within {self.timeout_s:g} s"
            ) from None
        except libvirt.libvirtError as error:
            classified = _classify(error)
            if classified.transient:
                drop_connection(self.uri)
            raise classified from error
