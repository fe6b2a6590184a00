"""The browser console proxy: websockify with our token plugin, Origin check and log masking.

``manage.py console_proxy`` runs it. A browser opens ``wss://proxy/?token=…``; the proxy

1. refuses the upgrade (HTTP 403) unless the ``Origin`` header is one of the allowed origins
   (checked *before* the token, so a page on a foreign origin cannot burn a user's token);
2. resolves the token through ``console_token_consume``: a browser ticket's single-use,
   expiring token, stored as a SHA-256 hash, whose session is still live; anything else is
   a 403 that does not say why;
3. connects the websocket to the desktop's VNC display and pipes bytes both ways; the VNC
   password itself travels inside the RFB stream, from the browser to QEMU;
4. tells the broker when a browser connects and disconnects (``session_console_event``).

websockify handles every connection in a **forked process** of its own (its default
``multiprocessing`` mode; ``--libserver`` ignores token plugins). Each child opens its own
database connections and closes them after each use, the parent never holds one when it
forks, and all state lives in the database: any number of proxies can run side by side
behind a load balancer.

websockify logs request paths, and paths carry tokens: ``install_token_mask`` puts a filter
on its loggers and on the root handlers that rewrites ``token=…`` to ``token=***``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import connections
from websockify import auth_plugins, token_plugins
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy
from websockify.websockifyserver import WebSockifyRequestHandler, WebSockifyServer

logger = logging.getLogger(__name__)

# Never exists (nothing lives under /dev/null): websockify then reports "no cert file" and
# refuses TLS handshakes, instead of treating the working directory as a certificate.
NO_CERTIFICATE = "/dev/null/no-certificate"


# --- log masking ----------------------------------------------------------------------------
_TOKEN_PATTERNS = (
    # query strings and anything shaped like one: token=abc, token%3Dabc
    (re.compile(r"(token(?:=|%3D))[^&\s'\"<>]+", re.IGNORECASE), r"\1***"),
    # websockify's own "Token 'abc' not found" (our handler never raises it, but a bare
    # websockify token plugin would)
    (re.compile(r"(Token ')[^']*(')"), r"\1***\2"),
)


def mask_tokens(text: str) -> str:
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class TokenMaskFilter(logging.Filter):
    """Rewrites a record's message (and traceback) with every console token masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_tokens(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_tokens(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_tokens(record.stack_info)
        return True


# The loggers websockify and this module log on. A filter on a logger sees the records
# created there before any handler does; the root handlers' filter catches the rest.
MASKED_LOGGERS = (WebSockifyServer.get_logger().name, token_plugins.logger.name,
                  "websockify", __name__, "brokers.services")


def install_token_mask() -> TokenMaskFilter:
    """Mask tokens in everything the proxy process logs. Idempotent."""
    existing = [f for f in logging.getLogger(__name__).filters if isinstance(f, TokenMaskFilter)]
    mask = existing[0] if existing else TokenMaskFilter()
    targets = [logging.getLogger(name) for name in MASKED_LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        if mask not in target.filters:
            target.addFilter(mask)
    return mask


# --- database access in forked children ----------------------------------------------------
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


# --- Origin ---------------------------------------------------------------------------------
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|[^\s:/\[\]]+)"
                     r"(?::(?P<port>\d{1,5}|\*))?/?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _origin_parts(value: str) -> tuple[str, str, str] | None:
    """``(scheme, host, port)`` of an origin (or an allowed-origin pattern whose port may be
    ``*``), default ports made explicit; None for anything that is not an http(s) origin."""
    match = _ORIGIN.fullmatch(value.strip().lower())
    if match is None:
        return None
    scheme = match["scheme"]
    return scheme, match["host"], match["port"] or _DEFAULT_PORTS[scheme]


def allowed_origins() -> list[str]:
    return list(settings.VDI["CONSOLE_ALLOWED_ORIGINS"])


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """Exact scheme, host and port; an allowed entry's port may be ``*`` (development)."""
    if not origin:
        return False
    actual = _origin_parts(origin)
    if actual is None or "*" in actual:
        return False
    for pattern in allowed:
        wanted = _origin_parts(pattern)
        if wanted and wanted[:2] == actual[:2] and wanted[2] in ("*", actual[2]):
            return True
    return False


class OriginCheck(auth_plugins.BasePlugin):
    """A websockify auth plugin: the ``Origin`` header must be an allowed origin.

    ``src`` is a space- or comma-separated list; without it the setting
    ``VDI["CONSOLE_ALLOWED_ORIGINS"]`` (``VDI_CONSOLE_ALLOWED_ORIGINS``) applies.
    """

    def __init__(self, src=None):
        super().__init__(src)
        self.allowed = re.split(r"[\s,]+", src.strip()) if src else allowed_origins()

    def authenticate(self, headers, target_host, target_port):
        origin = headers.get("Origin")
        if not origin_allowed(origin, self.allowed):
            raise auth_plugins.InvalidOriginError(expected=self.allowed, actual=origin)


# --- tokens ---------------------------------------------------------------------------------
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

        from .services import console_token_consume

        with database_access(), no_scope():
            return console_token_consume(token=token)

    def lookup(self, token):
        target = self.resolve(token)
        return None if target is None else (target.host, target.port)


def console_event(target, phase: str, client_address: str) -> None:
    """Tell the broker a browser logged in to (``initialize``) or left (``disconnect``) the
    ticket's desktop. Best effort: a failure is logged, never raised into the proxy."""
    from tenants.scoping import no_scope, scopes_disabled

    from .models import Session
    from .services import session_console_event

    try:
        with database_access(), no_scope(), scopes_disabled():
            session = (Session.objects.select_related("desktop")
                       .filter(pk=target.session_id).first())
            if session is not None and session.desktop is not None:
                session_console_event(desktop=session.desktop, phase=phase,
                                      client_address=client_address)
    except Exception:  # noqa: BLE001 - the console keeps working without the bookkeeping
        logger.exception("session %s: could not record console %s", target.session_id, phase)


# --- the request handler --------------------------------------------------------------------
class ConsoleProxyHandler(ProxyRequestHandler):
    """websockify's proxy handler with our order of checks, quiet refusals and events."""

    console_target = None

    def handle_upgrade(self):
        # websockify validates the token before it authenticates: ours checks the Origin
        # first, so a refused page cannot use up the token.
        self.auth_connection()
        self.validate_connection()
        super(WebSockifyRequestHandler, self).handle_upgrade()  # the websocket handshake

    def get_target(self, target_plugin):
        token = (parse_qs(urlsplit(self.path).query).get("token") or [""])[0].strip()
        resolve = getattr(target_plugin, "resolve", None)
        if resolve is not None:
            self.console_target = resolve(token) if token else None
            target = self.console_target
            pair = None if target is None else (target.host, target.port)
        else:
            pair = target_plugin.lookup(token) if token else None
        if pair is None:
            # Neither the log nor the browser learns the token or why it was refused.
            self.send_error(403, "Console token refused")
            raise self.server.EClose("console token refused (missing, unknown, used, "
                                     "expired, or its session ended)")
        return pair

    def client_ip(self) -> str:
        address = self.client_address[0] if self.client_address else ""
        if settings.VDI["CONSOLE_PROXY_TRUST_FORWARDED_FOR"]:
            # The load balancer appends the address it saw: the last entry is the one to
            # trust (earlier ones come from the client and can be forged).
            forwarded = [hop.strip() for hop in self.headers.get("X-Forwarded-For", "").split(",")]
            forwarded = [hop for hop in forwarded if hop]
            if forwarded:
                address = forwarded[-1]
        return address[:64]

    def do_proxy(self, target):
        # Reached once the desktop's VNC display accepted the TCP connection: the browser's
        # RFB login runs through here next; libvirt's own graphics events (manage.py
        # watch_hosts) confirm it from the host's side.
        if self.console_target is not None:
            self.log_message("console of session %s: connected to %s:%s",
                             self.console_target.session_id, self.server.target_host,
                             self.server.target_port)
            console_event(self.console_target, "initialize", self.client_ip())
        try:
            super().do_proxy(target)
        finally:
            if self.console_target is not None:
                console_event(self.console_target, "disconnect", self.client_ip())
                self.log_message("console of session %s: closed",
                                 self.console_target.session_id)


def build_server(*, listen_host: str, listen_port: int, origins: list[str] | None = None,
                 cert: str | None = None, key: str | None = None, heartbeat: int = 30,
                 verbose: bool = False) -> WebSocketProxy:
    """The websockify server, configured but not yet listening (``start_server()`` does)."""
    return WebSocketProxy(
        RequestHandlerClass=ConsoleProxyHandler,
        listen_host=listen_host, listen_port=listen_port,
        token_plugin=ConsoleTokenPlugin(),
        auth_plugin=OriginCheck(" ".join(origins) if origins else None),
        cert=cert or NO_CERTIFICATE, key=key, ssl_only=bool(cert),
        heartbeat=heartbeat, verbose=verbose,
        web="", record="", daemon=False, run_once=False,
    )
