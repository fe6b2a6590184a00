"""Run the host event watcher until interrupted (one per deployment is enough)."""

import signal
import threading

from django.core.management.base import BaseCommand

from hypervisors.watcher import HostWatcher
from tenants.scoping import scopes_disabled


class Command(BaseCommand):
    help = ("Follow every host's libvirt events (power changes, console logins) and apply "
            "them to desktops and sessions as they happen.")

    def add_arguments(self, parser):
        parser.add_argument("--sync-every", type=float, default=30.0,
                            help="Seconds between looks for new or changed hosts.")

    def handle(self, *args, sync_every, **options):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(f"watching hosts (new hosts picked up every {sync_every:g} s)")
        with scopes_disabled():
            HostWatcher(sync_every_s=sync_every).run(stop)
        self.stdout.write("stopped")
