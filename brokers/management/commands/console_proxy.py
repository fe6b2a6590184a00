"""Run the browser console proxy (websockify) until interrupted. Run as many as you like."""

import multiprocessing
import socket

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections

from brokers.proxy import allowed_origins, build_server, install_token_mask


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:6080), not {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def describe_limits(server) -> str:
    """The limits this proxy applies, for its start-up line (a 0 setting: none)."""
    limits, handshake_s = server.limits, server.handshake_deadline.seconds
    per_address = ("left to the load balancer"
                   if settings.VDI["CONSOLE_PROXY_TRUST_FORWARDED_FOR"]
                   else limits.max_per_address or "none")
    return (f"connections per address: {per_address}, in all: "
            f"{limits.max_connections or 'none'}; handshake within "
            f"{f'{handshake_s:g} s' if handshake_s > 0 else 'no limit'}; consoles of ended "
            f"sessions closed within {server.recheck_s:g} s")


class Command(BaseCommand):
    help = ("Proxy browser consoles (noVNC over a websocket) to desktops' VNC displays: "
            "single-use tokens resolved in the database, Origin checked, tokens masked in "
            "logs, connections capped, consoles closed when their session ends. Stateless: "
            "run one per machine or several behind a load balancer.")

    def add_arguments(self, parser):
        parser.add_argument("--listen", default=settings.VDI["CONSOLE_PROXY_LISTEN"],
                            help="HOST:PORT to listen on (default: VDI_CONSOLE_PROXY_LISTEN, "
                                 "%(default)s).")
        parser.add_argument("--tls-cert", default=settings.VDI["CONSOLE_PROXY_TLS_CERT"],
                            help="PEM certificate chain to serve wss:// with (then only TLS "
                                 "connections are accepted; default: "
                                 "VDI_CONSOLE_PROXY_TLS_CERT, else plain ws://).")
        parser.add_argument("--tls-key", default=settings.VDI["CONSOLE_PROXY_TLS_KEY"],
                            help="The certificate's PEM private key (default: "
                                 "VDI_CONSOLE_PROXY_TLS_KEY).")
        parser.add_argument("--heartbeat", type=int, default=30,
                            help="Seconds between websocket pings, which keep idle consoles "
                                 "from being cut by load balancers (0: none).")

    def handle(self, *args, listen, tls_cert, tls_key, heartbeat, **options):
        host, port = parse_listen(listen)
        # websockify only logs a failed bind and exits 0: check the address first.
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        except OSError as error:
            raise CommandError(f"cannot listen on {listen}: {error}") from error
        install_token_mask()
        origins = allowed_origins()
        if not origins:
            raise CommandError("no allowed origins: set VDI_CONSOLE_ALLOWED_ORIGINS to the "
                               "portal's origin(s), e.g. https://vdi.example.com")
        try:  # reads the certificate and key: a bad one fails now, not on the first browser
            server = build_server(listen_host=host, listen_port=port, origins=origins,
                                  tls_cert=tls_cert, tls_key=tls_key, heartbeat=heartbeat,
                                  verbose=int(options.get("verbosity", 1)) > 1)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        # Fail now, not on the first browser, if the database is unreachable.
        connection.ensure_connection()
        # websockify forks a process per connection: the parent must hold no database
        # connection then (a child would share its socket). Fork explicitly, whatever
        # Python's default start method becomes.
        connections.close_all()
        multiprocessing.set_start_method("fork", force=True)
        shown = f"[{host}]" if ":" in host else host
        transport = (f"wss://{shown}:{port}/ (TLS, certificate {tls_cert})" if server.tls
                     else f"ws://{shown}:{port}/ (no TLS: in production, only behind a "
                          "TLS-terminating proxy)")
        self.stdout.write(f"console proxy listening on {transport}; allowed origins: "
                          f"{' '.join(origins)}")
        self.stdout.write(f"limits: {describe_limits(server)}")
        self.stdout.flush()
        server.start_server()
        self.stdout.write("console proxy stopped")
