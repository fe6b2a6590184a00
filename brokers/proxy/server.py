"""websockify's request handler and server, put together with our checks and limits."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy
from websockify.websockifyserver import WebSockifyRequestHandler

from .broker import SESSION_ENDED_CLOSE_CODE, ConsoleTokenPlugin, SessionWatch, console_event
from .limits import AdmittingListener, ConnectionLimits, HandshakeDeadline
from .origins import OriginCheck

# Never exists (nothing lives under /dev/null): websockify then reports "no cert file" and
# refuses TLS handshakes, instead of treating the working directory as a certificate.
NO_CERTIFICATE = "/dev/null/no-certificate"


def tls_context(*, cert: str, key: str) -> ssl.SSLContext:
    """What browsers' wss:// handshakes are served with: the PEM certificate chain and its
    key, TLS 1.2 at least. Built once, when the proxy starts, so that a missing, unreadable
    or mismatched file stops it there rather than failing every browser."""
    if not cert or not key:
        raise ImproperlyConfigured("the console proxy's TLS certificate and key go together: "
                                   "give both (VDI_CONSOLE_PROXY_TLS_CERT and "
                                   "VDI_CONSOLE_PROXY_TLS_KEY, or --tls-cert and --tls-key)")
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise ImproperlyConfigured(f"cannot read the console proxy's TLS {what} {path}: "
                                       f"{error.strerror or error}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except ssl.SSLError as error:
        raise ImproperlyConfigured(
            f"the console proxy's TLS certificate {cert} and key {key} are not a PEM "
            f"certificate chain and its matching private key: {error.reason or error}") from None
    return context


class ConsoleProxyHandler(ProxyRequestHandler):
    """websockify's proxy handler with our order of checks, quiet refusals, events, and the
    session watch."""

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
        # Reached once the desktop's VNC display accepted the TCP connection: the handshake
        # is over, and the browser's RFB login runs through here next; libvirt's own
        # graphics events (manage.py watch_hosts) confirm it from the host's side.
        self.server.handshake_deadline.disarm()
        if self.console_target is None:  # a bare websockify token plugin: nothing to watch
            return super().do_proxy(target)
        self.log_message("console of session %s: connected to %s:%s",
                         self.console_target.session_id, self.server.target_host,
                         self.server.target_port)
        console_event(self.console_target, "initialize", self.client_ip())
        try:
            with SessionWatch(self.console_target, target, self.server.recheck_s) as watch:
                try:
                    super().do_proxy(target)  # returns only by raising
                except self.CClose:
                    # Unless the browser left, tell it why when the session is over: cut by
                    # the watch, or the display gone with it (a reset after the logoff).
                    ended = None if self.request.close_code is not None else watch.why_ended()
                    if ended is None:
                        raise
            self.log_message("console of session %s: cut, the session ended",
                             self.console_target.session_id)
            raise self.CClose(SESSION_ENDED_CLOSE_CODE, ended)
        finally:
            console_event(self.console_target, "disconnect", self.client_ip())
            self.log_message("console of session %s: closed", self.console_target.session_id)


# --- the server -----------------------------------------------------------------------------
class ConsoleProxyServer(WebSocketProxy):
    """websockify's server with the connection limits in its parent process, the handshake
    deadline in each child and, given a ``tls`` context, wss:// only."""

    def __init__(self, *, limits: ConnectionLimits, recheck_s: float,
                 handshake_timeout_s: float, tls: ssl.SSLContext | None = None, **kwargs):
        self.limits, self.recheck_s, self.tls = limits, recheck_s, tls
        self.handshake_deadline = HandshakeDeadline(handshake_timeout_s)
        super().__init__(RequestHandlerClass=ConsoleProxyHandler, **kwargs)

    def do_handshake(self, sock, address):
        if self.tls is None:
            return super().do_handshake(sock, address)
        # websockify would build a context per connection, with every option cleared; ours
        # is the one built at start. Anything but a TLS handshake (a ws:// request) fails
        # here, and so does one the handshake deadline cuts short.
        try:
            client = self.tls.wrap_socket(sock, server_side=True)
        except OSError as error:  # ssl.SSLError, a reset, the deadline's HandshakeTimeout
            raise self.EClose(f"TLS handshake failed: {error}") from None
        self.RequestHandlerClass(client, (*address[:2], True), self)
        return client

    def socket(self, *args, **kwargs):
        # start_server() opens the listening socket through self.socket() (desktops'
        # displays are dialled through WebSockifyServer.socket directly): give it ours.
        plain = super().socket(*args, **kwargs)
        listener = AdmittingListener(plain.family, plain.type, plain.proto,
                                     fileno=plain.detach())
        listener.limits, listener.answer_in_http = self.limits, not self.ssl_only
        return listener

    def top_new_client(self, startsock, address):
        # The forked child's whole life (run in-process by run_once and the tests).
        self.handshake_deadline.arm()
        try:
            super().top_new_client(startsock, address)
        finally:
            self.handshake_deadline.disarm()


def build_server(*, listen_host: str, listen_port: int, origins: list[str] | None = None,
                 tls_cert: str = "", tls_key: str = "", heartbeat: int = 30,
                 verbose: bool = False) -> ConsoleProxyServer:
    """The websockify server, configured but not yet listening (``start_server()`` does);
    with ``tls_cert`` and ``tls_key`` it serves wss:// only (``ImproperlyConfigured`` when
    they cannot be used).

    Behind a load balancer (``CONSOLE_PROXY_TRUST_FORWARDED_FOR``) every connection comes
    from the balancer's address, so the per-address cap is left to the balancer, which sees
    the clients; the total cap still applies."""
    proxy_settings = settings.VDI
    behind_balancer = proxy_settings["CONSOLE_PROXY_TRUST_FORWARDED_FOR"]
    tls = tls_context(cert=tls_cert, key=tls_key) if tls_cert or tls_key else None
    return ConsoleProxyServer(
        limits=ConnectionLimits(
            max_connections=proxy_settings["CONSOLE_PROXY_MAX_CONNECTIONS"],
            max_per_address=0 if behind_balancer
            else proxy_settings["CONSOLE_PROXY_MAX_PER_ADDRESS"]),
        recheck_s=proxy_settings["CONSOLE_PROXY_RECHECK_S"],
        handshake_timeout_s=proxy_settings["CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S"],
        tls=tls, listen_host=listen_host, listen_port=listen_port,
        token_plugin=ConsoleTokenPlugin(),
        auth_plugin=OriginCheck(" ".join(origins) if origins else None),
        # websockify's own start-up lines say whether it serves TLS from these two.
        cert=tls_cert if tls else NO_CERTIFICATE, ssl_only=tls is not None,
        heartbeat=heartbeat, verbose=verbose,
        web="", record="", daemon=False, run_once=False,
    )
