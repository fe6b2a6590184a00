"""Serve this machine's worker metrics to Prometheus, on a machine that runs no portal.

The portal's /metrics already adds up every process of its own machine (multiprocess mode);
a machine that runs only Celery workers runs this beside them instead, on the same
PROMETHEUS_MULTIPROC_DIR. It answers the same readers as /metrics (VDI_METRICS_ALLOWED_IPS
or the bearer token) and never touches the database: the fleet's state gauges come from the
portal's /metrics.
"""

from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.core.management.base import BaseCommand, CommandError
from prometheus_client import make_wsgi_app

from brokers.management.commands.console_proxy import parse_listen
from config.metrics import address_allowed, event_registry, token_valid


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # a scrape every few seconds is not news
        pass


def protected(app):
    def guarded(environ, start_response):
        if token_valid(environ.get("HTTP_AUTHORIZATION", "")) or address_allowed(
                environ.get("REMOTE_ADDR")):
            return app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"Forbidden\n"]

    return guarded


class Command(BaseCommand):
    help = ("Serve the metrics of this machine's Celery workers (Prometheus multiprocess "
            "files) on HOST:PORT, for machines that run no portal.")

    def add_arguments(self, parser):
        parser.add_argument("--listen", default="127.0.0.1:9808",
                            help="HOST:PORT to listen on (default %(default)s).")

    def handle(self, *args, listen, **options):
        host, port = parse_listen(listen)
        try:
            server = make_server(host, port, protected(make_wsgi_app(event_registry())),
                                 handler_class=_QuietHandler)
        except OSError as error:
            raise CommandError(f"cannot listen on {listen}: {error}") from error
        self.stdout.write(f"serving worker metrics on http://{listen}/metrics", ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
