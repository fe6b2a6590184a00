"""Hosts: registration, probing and placement."""

from __future__ import annotations

import logging

from django.db.models import Q, Sum
from django.utils import timezone

from vdi.choices import DesktopState

from .choices import HostState
from .drivers import DriverError, driver_for
from .models import Host

logger = logging.getLogger(__name__)

# Desktops in these states hold their host's resources.
_RESERVING_STATES = (
    DesktopState.PROVISIONING, DesktopState.STARTING, DesktopState.RUNNING,
    DesktopState.STOPPING, DesktopState.RECYCLING, DesktopState.UNKNOWN,
)


def host_create(**fields) -> Host:
    host = Host(**fields)
    host.full_clean()
    host.save()
    from .tasks import host_probe_task

    host_probe_task.delay_on_commit(str(host.id))
    return host


def host_probe(*, host: Host) -> Host:
    """Ask the host what it has and mark it up, or record why it can't be reached."""
    try:
        info = driver_for(host).host_info()
    except DriverError as error:
        Host.objects.filter(pk=host.pk).update(state=HostState.DOWN, last_error=str(error))
        host.refresh_from_db()
        logger.warning("host %s unreachable: %s", host.name, error)
        return host
    host.cpus, host.memory_mb = info.cpus, info.memory_mb
    host.last_seen_at, host.last_error = timezone.now(), ""
    if host.state in (HostState.NEW, HostState.DOWN):
        host.state = HostState.UP
    host.save(update_fields=["cpus", "memory_mb", "last_seen_at", "last_error", "state"])
    return host


def host_place(*, vcpus: int, memory_mb: int) -> Host | None:
    """The enabled, up host with the fewest committed vCPUs that fits the desktop, or None."""
    reserving = Q(desktops__state__in=_RESERVING_STATES)
    candidates = (
        Host.objects.filter(enabled=True, state=HostState.UP)
        .annotate(
            used_vcpus=Sum("desktops__vcpus", filter=reserving, default=0),
            used_memory=Sum("desktops__memory_mb", filter=reserving, default=0),
        )
        .order_by("used_vcpus", "name")
    )
    for host in candidates:
        fits_cpu = host.used_vcpus + vcpus <= host.vcpu_capacity
        fits_memory = host.used_memory + memory_mb <= host.memory_capacity_mb
        if fits_cpu and fits_memory:
            return host
    return None
