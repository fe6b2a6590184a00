"""Host events in near real time: one process subscribes to every host and applies what
they report (power changes, console logins) through the services.

libvirt delivers events on its own thread; they are queued and applied on the watcher's
thread, so a slow database never stalls libvirt's event loop. A host whose connection
drops is subscribed again at the next sync and checked, which reconciles what was missed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass

from django.utils import timezone

from core.taskutils import task_named

from .drivers import DomainEvent, DriverError, EventKind, Subscription, driver_for
from .models import Host
from .services import host_event

logger = logging.getLogger(__name__)


@dataclass
class _Watch:
    uri: str
    subscription: Subscription


class HostWatcher:
    def __init__(self, *, sync_every_s: float = 30, include_simulated: bool = False):
        # A simulated host's state lives in the process that made it, never in this one.
        self.sync_every_s = sync_every_s
        self.include_simulated = include_simulated
        self.events: queue.Queue = queue.Queue()
        self.watches: dict[uuid.UUID, _Watch] = {}

    def sync(self) -> None:
        """Subscribe to hosts not yet watched (or whose URI changed); drop removed ones."""
        hosts = Host.objects.filter(enabled=True)
        if not self.include_simulated:
            hosts = hosts.exclude(uri__startswith="test")
        wanted = {host.id: host for host in hosts}
        for host_id in list(self.watches):
            host = wanted.get(host_id)
            if host is None or host.uri != self.watches[host_id].uri:
                self.watches.pop(host_id).subscription.cancel()
        for host_id, host in wanted.items():
            if host_id in self.watches:
                continue
            try:
                subscription = driver_for(host).subscribe(
                    lambda event, host_id=host_id: self.events.put(
                        (host_id, event, timezone.now()))
                )
            except DriverError as error:
                logger.warning("cannot watch host %s yet: %s", host.name, error)
                continue
            self.watches[host_id] = _Watch(uri=host.uri, subscription=subscription)
            logger.info("watching host %s (%s)", host.name, host.uri)
            self._check(host)  # events may have been missed while nobody listened

    def apply_pending(self, timeout_s: float = 1.0) -> int:
        """Apply the queued events; wait up to ``timeout_s`` for the first one."""
        applied = 0
        block = True
        while True:
            try:
                host_id, event, seen_at = self.events.get(block=block, timeout=timeout_s)
            except queue.Empty:
                return applied
            block = False
            self._apply(host_id, event, seen_at)
            applied += 1

    def _apply(self, host_id, event: DomainEvent, seen_at) -> None:
        if event.kind == EventKind.CLOSED:
            watch = self.watches.pop(host_id, None)
            if watch is not None:
                logger.warning("lost the event stream of host %s: %s", host_id, event.detail)
            return
        host = Host.objects.filter(pk=host_id).first()
        if host is None:
            return
        try:
            host_event(host=host, event=event, seen_at=seen_at)
        except Exception:  # noqa: BLE001 - one bad event must not stop the watcher
            logger.exception("host %s: could not apply %s", host.name, event)

    def _check(self, host: Host) -> None:
        task_named("hypervisors.host_check").delay(str(host.id))

    def run(self, stop: threading.Event) -> None:
        next_sync = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_sync:
                self.sync()
                next_sync = time.monotonic() + self.sync_every_s
            self.apply_pending(timeout_s=1.0)
        for watch in self.watches.values():
            watch.subscription.cancel()
