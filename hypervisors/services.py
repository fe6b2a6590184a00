"""Hosts: registration, health checks, reconciliation, placement and host events.

Hosts are platform-owned, so these services look across tenants (``scopes_disabled``) when
they touch desktops; they run for staff or in workers, never on a tenant's behalf. Their audit
entries are the platform's (no tenant), by the requesting staff user or by the platform.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from django.db.models import IntegerField, Value

from core.errors import Conflict
from core.modelutils import model_update
from core.taskutils import send_on_commit
from tenants.audit import audit_record, audited
from tenants.scoping import scopes_disabled

from . import events
from .choices import HostState
from .drivers import (
    CertificateError,
    DomainEvent,
    DriverError,
    HypervisorDriver,
    NotFound,
    driver_for,
)
from .models import Host
from .networks import tenant_networks_reconcile, traffic_filter_ensure

logger = logging.getLogger(__name__)

# --- registration and operator actions ------------------------------------------------------
def _host_audited(host: Host, verb: str, **details):
    return audited(action=f"host.{verb}", tenant=None, target=host,
                   details={"name": host.name, **details})


def host_create(**fields) -> Host:
    return host_save(host=Host(**fields))


def host_update(*, host: Host, **fields) -> Host:
    model_update(host, fields)
    return host_save(host=host)


def host_save(*, host: Host) -> Host:
    """Validate and save a new or edited host, then check it: the probe fills in what it
    has and brings it up, or records why not."""
    with _host_audited(host, "create" if host._state.adding else "update", uri=host.uri):
        host.full_clean()
        host.save()
        host_check_enqueue(host)
    return host


def host_check_enqueue(host: Host) -> None:
    send_on_commit("hypervisors.host_check", str(host.id))


def host_refresh(*, host: Host) -> Host:
    """Check the host and reconcile its desktops now rather than at the next beat."""
    with _host_audited(host, "refresh"):
        host_check_enqueue(host)
    return host


def host_drain(*, host: Host) -> Host:
    """Maintenance: no new desktops, starts or spare hand-outs here; running ones stay."""
    with _host_audited(host, "drain", previous=host.state):
        Host.objects.filter(pk=host.pk).update(state=HostState.MAINTENANCE)
        host.refresh_from_db()
    logger.info("host %s drained", host.name)
    return host


def host_activate(*, host: Host) -> Host:
    """Out of maintenance (or retry a down host now): the next check decides up or down."""
    with _host_audited(host, "activate", previous=host.state):
        Host.objects.filter(pk=host.pk).update(state=HostState.NEW, failures=0)
        host.refresh_from_db()
        host_check_enqueue(host)
    return host


def host_set_enabled(*, host: Host, enabled: bool) -> Host:
    with _host_audited(host, "enable" if enabled else "disable"):
        Host.objects.filter(pk=host.pk).update(enabled=enabled)
        host.refresh_from_db()
        if enabled:
            host_check_enqueue(host)
    return host


def host_delete(*, host: Host) -> None:
    """Only an empty host goes: its desktops' disks and domains live there."""
    with _host_audited(host, "delete"), transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        with scopes_disabled():
            desktops = host_usage().get(pk=host.pk).desktop_count
        if desktops:
            raise Conflict(
                f"Host {host.name} still has {desktops} desktop(s); drain it and delete or "
                "move them first.", code="host_not_empty", details={"desktops": desktops},
            )
        host.delete()


# --- health ---------------------------------------------------------------------------------
def host_check(*, host: Host) -> Host:
    """Probe the host, record what it has and whether it is fit for work, then reconcile.

    Unreachable: a new host is down at once (with the reason); an up host goes down after
    HOST_DOWN_AFTER_FAILURES checks in a row and its desktops become unknown, except when TLS
    refused a certificate: that takes it down at once, as no retry changes a certificate.
    A host that answers again comes back up and its desktops take the state libvirt reports.
    """
    driver = driver_for(host)
    now = timezone.now()
    try:
        info = driver.host_info()
    except DriverError as error:
        return _host_unreachable(host, error, now)

    problems = []
    if not info.simulated and host.virt_type not in info.virt_types:
        offered = ", ".join(info.virt_types) or "none"
        problems.append(f"virt type {host.virt_type!r} is not offered by this host "
                        f"(it offers: {offered})")
    storage = None
    try:
        storage = driver.storage_info(host.storage_pool)
    except NotFound:
        problems.append(f"storage pool {host.storage_pool!r} does not exist on this host")
    except DriverError as error:
        return _host_unreachable(host, error, now)
    if storage is not None and not storage.active:
        problems.append(f"storage pool {host.storage_pool!r} is not active")
    filter_problem = traffic_filter_ensure(host)
    if filter_problem:
        problems.append(filter_problem)
    else:
        try:
            tenant_networks_reconcile(host)
        except DriverError as error:
            problems.append(f"tenant networks: {error}")

    fields = {
        "cpus": info.cpus, "memory_mb": info.memory_mb, "virt_types": list(info.virt_types),
        "volumes": list(storage.volumes) if storage else [],
        "storage_free_gb": storage.free_gb if storage else None,
        "failures": 0, "last_seen_at": now, "last_checked_at": now,
        "last_error": "; ".join(problems),
    }
    if host.state != HostState.MAINTENANCE:
        fields["state"] = HostState.DOWN if problems else HostState.UP
    Host.objects.filter(pk=host.pk).update(**fields)
    was = host.state
    host.refresh_from_db()
    if problems:
        logger.warning("host %s is not fit for desktops: %s", host.name, host.last_error)
    elif was != host.state:
        logger.info("host %s is %s", host.name, host.state)
    _audit_state_change(host, was)
    host_reconcile(host=host, driver=driver)
    return host


def _host_unreachable(host: Host, error: DriverError, now: datetime) -> Host:
    was = host.state
    Host.objects.filter(pk=host.pk).update(
        failures=F("failures") + 1, last_error=str(error), last_checked_at=now
    )
    host.refresh_from_db()
    logger.warning("host %s did not answer (%d in a row): %s", host.name, host.failures, error)
    # A refused certificate stays refused: waiting for more failures would only hide it.
    threshold = (1 if isinstance(error, CertificateError)
                 else settings.VDI["HOST_DOWN_AFTER_FAILURES"])
    if host.state == HostState.NEW or (host.state == HostState.UP and host.failures >= threshold):
        Host.objects.filter(pk=host.pk).update(state=HostState.DOWN)
        host.state = HostState.DOWN
    if host.failures >= threshold:
        with scopes_disabled():
            events.host_unreachable.send(sender=Host, host=host,
                                         reason=f"host {host.name} is not answering")
    _audit_state_change(host, was)
    return host


def _audit_state_change(host: Host, was: str) -> None:
    """Checks run every minute: only a change of state is worth an entry."""
    if host.state != was:
        audit_record(tenant=None, actor=None, action="host.check", target=host,
                     details={"name": host.name, "from": was, "to": host.state,
                              "error": host.last_error[:500]})


# --- reconciliation -------------------------------------------------------------------------
def host_reconcile(*, host: Host, driver: HypervisorDriver | None = None) -> dict:
    """Compare the host's domains with the database and settle the differences.

    Desktops follow what libvirt reports (a desktop whose domain vanished is marked lost);
    domains the portal does not know are recorded on the host and never touched.
    """
    driver = driver or driver_for(host)
    seen_at = timezone.now()
    try:
        domains = driver.list_domains()
    except DriverError as error:
        logger.warning("host %s: reconciliation skipped: %s", host.name, error)
        return {}
    changed, known = {}, set()
    with scopes_disabled():
        for _receiver, (settled, owned) in events.host_domains_listed.send(
                sender=Host, host=host, domains=domains, seen_at=seen_at):
            changed.update(settled)
            known |= owned
    unknown = sorted(set(domains) - known)
    previous_unknown = host.unknown_domains
    if unknown != previous_unknown:
        if unknown:
            logger.warning("host %s has domains the portal did not create (left alone): %s",
                           host.name, ", ".join(unknown))
        Host.objects.filter(pk=host.pk).update(unknown_domains=unknown)
        host.unknown_domains = unknown
    if changed or unknown != previous_unknown:
        audit_record(tenant=None, actor=None, action="host.reconcile", target=host,
                     details={"name": host.name, "desktops": changed, "unknown_domains": unknown})
    return changed


# --- events ---------------------------------------------------------------------------------
def host_event(*, host: Host, event: DomainEvent, seen_at: datetime) -> None:
    """Pass on one event a host reported: a power change or a console (dis)connection."""
    with scopes_disabled():
        events.domain_event.send(sender=Host, host=host, event=event, seen_at=seen_at)


# --- placement ------------------------------------------------------------------------------
def host_usage():
    """Hosts annotated with what their guests commit: ``used_vcpus``, ``used_memory``,
    ``desktop_count`` (as the layer that places guests counts them; zero without one)."""
    zero = Value(0, output_field=IntegerField())
    usage = {"used_vcpus": zero, "used_memory": zero, "desktop_count": zero}
    for _receiver, counted in events.host_usage_requested.send(sender=Host):
        usage.update(counted)
    return Host.objects.annotate(**usage)


def _eligible_hosts(base_volume: str, exclude: Iterable[str] = ()):
    """Enabled, up hosts that have the base volume, with what their desktops commit."""
    hosts = host_usage().filter(enabled=True, state=HostState.UP).exclude(pk__in=list(exclude))
    return [host for host in hosts if not base_volume or host.has_volume(base_volume)]


def host_place(*, vcpus: int, memory_mb: int, base_volume: str = "",
               exclude: Iterable[str] = ()) -> Host | None:
    """An enabled, up host with room for the desktop and its image's base volume, or None.
    Hosts in ``exclude`` (ids) are not considered.

    ``spread`` (the default) takes the least committed host, ``pack`` the most committed one
    that still fits. Boots in flight count: starting and provisioning desktops reserve.
    """
    with scopes_disabled():
        hosts = _eligible_hosts(base_volume, exclude)
    hosts.sort(key=lambda host: host.name)
    hosts.sort(key=lambda host: host.used_vcpus, reverse=settings.VDI["PLACEMENT"] == "pack")
    for host in hosts:
        fits_cpu = host.used_vcpus + vcpus <= host.vcpu_capacity
        fits_memory = host.used_memory + memory_mb <= host.memory_capacity_mb
        if fits_cpu and fits_memory:
            return host
    return None


def host_room(*, vcpus: int, memory_mb: int, base_volume: str = "") -> int:
    """How many more desktops of this size the hosts can take, less those already waiting
    to be placed. The autoscaler grows a pool by this much at once: as fast as the hosts
    allow, never into desktops that could not be placed."""
    with scopes_disabled():
        room = sum(
            max(0, min((host.vcpu_capacity - host.used_vcpus) // vcpus,
                       (host.memory_capacity_mb - host.used_memory) // memory_mb))
            for host in _eligible_hosts(base_volume)
        )
        unplaced = sum(count for _receiver, count in
                       events.placement_backlog_requested.send(sender=Host))
    return max(0, room - unplaced)
