"""websockify's request handler and server, put together with our checks and limits."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy
from websockify.websockifyserver import WebSockifyRequestHandler

from .broker import SESSION_ENDED_CLOSE_CODE, ConsoleTokenPlugin, SessionWatch, console_event
from .limits import AdmittingListener, ConnectionLimits, HandshakeDeadline
from .origins import OriginCheck

# Never exists (nothing lives under /dev/null): websockify then reports "no cert file" and
# refuses TLS handshakes, instead of treating the working directory as a certificate.
NO_CERTIFICATE = "/dev/null/no-certificate"


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
    """websockify's server with the connection limits in its parent process and the
    handshake deadline in each child."""

    def __init__(self, *, limits: ConnectionLimits, recheck_s: float,
                 handshake_timeout_s: float, **kwargs):
        self.limits, self.recheck_s = limits, recheck_s
        self.handshake_deadline = HandshakeDeadline(handshake_timeout_s)
        super().__init__(RequestHandlerClass=ConsoleProxyHandler, **kwargs)

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
                 cert: str | None = None, key: str | None = None, heartbeat: int = 30,
                 verbose: bool = False) -> ConsoleProxyServer:
    """The websockify server, configured but not yet listening (``start_server()`` does).

    Behind a load balancer (``CONSOLE_PROXY_TRUST_FORWARDED_FOR``) every connection comes
    from the balancer's address, so the per-address cap is left to the balancer, which sees
    the clients; the total cap still applies."""
    proxy_settings = settings.VDI
    behind_balancer = proxy_settings["CONSOLE_PROXY_TRUST_FORWARDED_FOR"]
    return ConsoleProxyServer(
        limits=ConnectionLimits(
            max_connections=proxy_settings["CONSOLE_PROXY_MAX_CONNECTIONS"],
            max_per_address=0 if behind_balancer
            else proxy_settings["CONSOLE_PROXY_MAX_PER_ADDRESS"]),
        recheck_s=proxy_settings["CONSOLE_PROXY_RECHECK_S"],
        handshake_timeout_s=proxy_settings["CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S"],
        listen_host=listen_host, listen_port=listen_port,
        token_plugin=ConsoleTokenPlugin(),
        auth_plugin=OriginCheck(" ".join(origins) if origins else None),
        cert=cert or NO_CERTIFICATE, key=key, ssl_only=bool(cert),
        heartbeat=heartbeat, verbose=verbose,
        web="", record="", daemon=False, run_once=False,
    )
