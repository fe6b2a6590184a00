"""Prometheus metrics: ``/metrics``.

Two kinds, gathered differently:

- **events** (ticket issue latency, operation durations and failures) are histograms and
  counters observed where the work happens: tickets in web processes, operations in Celery
  workers. prometheus_client's multiprocess mode keeps every process's values in files
  under ``PROMETHEUS_MULTIPROC_DIR`` (default ``$VDI_DATA_DIR/prometheus``), and ``/metrics``
  adds up the files of every process on the machine: gunicorn's workers and the Celery
  workers beside them (docs/operations.md says how to scrape several machines);
- **state** (desktops, sessions, host capacity, queue depth) is read from the database and
  the broker at scrape time by ``StateCollector``: a few aggregate queries, so the figures
  are the same whichever process answers and never drift from the truth.

``/metrics`` answers the addresses in ``VDI_METRICS_ALLOWED_IPS`` (default loopback) or a
request bearing ``Authorization: Bearer $VDI_METRICS_TOKEN``; anyone else gets 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from pathlib import Path

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, HttpResponseForbidden
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
from prometheus_client import generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from brokers.choices import SessionState
from brokers.models import Session
from core.context import client_ip
from hypervisors.services import host_usage
from tenants.scoping import scopes_disabled
from vdi.models import Desktop

logger = logging.getLogger(__name__)

QUEUES = ("vdi", "console")


# --- state, read at scrape time -------------------------------------------------------------
def queue_lengths() -> dict[str, int]:
    """Messages waiting in each Celery queue: Redis list lengths (one list per priority
    step), or message files in the filesystem broker's folder."""
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2,
                                      socket_connect_timeout=2)
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue in QUEUES:
                    # kombu keeps priority 0 in the queue's own list, others in "queue\x06\x16N".
                    for key in (queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))):
                        pipe.llen(key)
                lengths = pipe.execute()
        finally:
            client.close()
        return {queue: sum(lengths[i * 4:(i + 1) * 4]) for i, queue in enumerate(QUEUES)}
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    counts = dict.fromkeys(QUEUES, 0)
    with os.scandir(folder) as entries:
        for entry in entries:
            # kombu names them <time>_<uuid>.<queue>.msg
            queue = entry.name.partition(".")[2].removesuffix(".msg")
            if queue in counts:
                counts[queue] += 1
    return counts


class StateCollector:
    """Gauges computed from the database (and the broker) each time /metrics is scraped."""

    def collect(self):

        with scopes_disabled():
            desktops = GaugeMetricFamily(
                "vdi_desktops", "Desktops by state, organisation, pool and host.",
                labels=["state", "tenant", "pool", "host"])
            rows = (Desktop.objects.values("state", "tenant__slug", "pool__name", "host__name")
                    .annotate(n=Count("id")).order_by())
            for row in rows:
                desktops.add_metric([row["state"], row["tenant__slug"], row["pool__name"],
                                     row["host__name"] or ""], row["n"])
            yield desktops

            sessions = GaugeMetricFamily(
                "vdi_sessions", "Live sessions (not ended) by state and organisation.",
                labels=["state", "tenant"])
            rows = (Session.objects.exclude(state=SessionState.ENDED)
                    .values("state", "tenant__slug").annotate(n=Count("id")).order_by())
            for row in rows:
                sessions.add_metric([row["state"], row["tenant__slug"]], row["n"])
            yield sessions

            hosts = list(host_usage())
        families = {
            "up": GaugeMetricFamily("vdi_host_up", "1 when the host is enabled and up.",
                                    labels=["host", "state"]),
            "vcpus": GaugeMetricFamily(
                "vdi_host_vcpus", "Virtual CPUs: committed to the host's desktops, and its "
                "capacity (physical CPUs × the CPU overcommit ratio).", labels=["host", "kind"]),
            "memory": GaugeMetricFamily(
                "vdi_host_memory_bytes", "Memory: committed to the host's desktops, and its "
                "capacity (physical memory × the memory overcommit ratio).",
                labels=["host", "kind"]),
        }
        for host in hosts:
            families["up"].add_metric([host.name, host.state], int(host.accepts_new_work))
            families["vcpus"].add_metric([host.name, "committed"], host.used_vcpus)
            families["vcpus"].add_metric([host.name, "capacity"], host.vcpu_capacity)
            families["memory"].add_metric([host.name, "committed"], host.used_memory * 2**20)
            families["memory"].add_metric([host.name, "capacity"],
                                          host.memory_capacity_mb * 2**20)
        yield from families.values()

        try:
            lengths = queue_lengths()
        except Exception as error:  # noqa: BLE001 - /readyz reports the broker; keep the rest
            logger.warning("metrics: queue lengths unavailable: %s", error)
        else:
            queues = GaugeMetricFamily("vdi_celery_queue_length",
                                       "Tasks waiting in each Celery queue.", labels=["queue"])
            for queue, length in lengths.items():
                queues.add_metric([queue], length)
            yield queues


# --- who may read them ----------------------------------------------------------------------
def address_allowed(address: str | None) -> bool:
    """``address`` is in VDI_METRICS_ALLOWED_IPS (addresses or networks)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(allowed, strict=False)
               for allowed in settings.VDI["METRICS_ALLOWED_IPS"])


def token_valid(authorization: str) -> bool:
    """``Authorization: Bearer <VDI_METRICS_TOKEN>``, compared in constant time."""
    expected = settings.VDI["METRICS_TOKEN"]
    scheme, _, given = authorization.partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode())


def _request_allowed(request) -> bool:
    """A request relayed by a proxy (X-Forwarded-For) is judged by its address only when
    VDI_THROTTLE_NUM_PROXIES says which one is the client's: a reverse proxy on this
    machine must not make the whole world loopback."""
    if token_valid(request.META.get("HTTP_AUTHORIZATION", "")):
        return True
    relayed = request.META.get("HTTP_X_FORWARDED_FOR")
    if relayed and not settings.REST_FRAMEWORK.get("NUM_PROXIES"):
        return False
    return address_allowed(client_ip(request))


# --- exposition -------------------------------------------------------------------------------
class _ThisProcess:
    """The default registry's metrics (this process's alone), for a registry of our own."""

    def collect(self):
        return REGISTRY.collect()


def event_registry() -> CollectorRegistry:
    """The event metrics of every process on this machine (multiprocess mode), else of this
    process."""
    collected = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(collected)
    else:
        collected.register(_ThisProcess())
    return collected


def metrics(request):
    """/metrics: this machine's event metrics and the fleet's state."""
    if not _request_allowed(request):
        return HttpResponseForbidden("Forbidden\n", content_type="text/plain")
    collected = event_registry()
    collected.register(StateCollector())
    return HttpResponse(generate_latest(collected), content_type=CONTENT_TYPE_LATEST)
