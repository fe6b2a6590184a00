"""The desktops' answers to the lower layers' events (tenants/events.py,
hypervisors/events.py)."""

from __future__ import annotations

from django.db.models import Count, Q, Sum

from core.taskutils import send_on_commit
from hypervisors.drivers import EventKind, PowerState

from .disclosure import audit_details_for
from .choices import RESERVING_STATES, SETTLED_STATES, UNPLACED_STATES, DesktopState
from .models import Desktop
from .services import desktop_mark_unknown, desktop_observe


def on_tenant_egress_changed(sender, *, tenant, **kwargs) -> None:
    """The organisation's desktops are let out of their network, or kept in: their traffic
    filters change once the setting commits, running desktops included."""
    send_on_commit("vdi.desktops_traffic_filter_apply", str(tenant.pk))


def on_host_unreachable(sender, *, host, reason, **kwargs) -> None:
    """Nobody knows what the host's settled desktops are doing until it answers."""
    for desktop in Desktop.objects.filter(host=host, state__in=SETTLED_STATES):
        desktop_mark_unknown(desktop=desktop, reason=reason)


def on_host_domains_listed(sender, *, host, domains, seen_at, **kwargs):
    """Desktops follow what libvirt reports (a desktop whose domain vanished is lost).
    Returns what changed and every desktop name the host holds."""
    changed = {}
    desktops = list(Desktop.objects.filter(host=host).exclude(
        state__in=(DesktopState.PENDING, DesktopState.DELETING)))
    for desktop in desktops:
        power = domains.get(desktop.name, PowerState.MISSING)
        outcome = desktop_observe(desktop=desktop, power=power, seen_at=seen_at)
        if outcome:
            changed[desktop.name] = outcome
    known = {desktop.name for desktop in desktops}
    known |= set(Desktop.objects.filter(host=host).values_list("name", flat=True))
    return changed, known


def on_domain_event(sender, *, host, event, seen_at, **kwargs) -> None:
    """A power change of a desktop's domain (console logins are the broker's)."""
    if event.kind != EventKind.LIFECYCLE or event.power_state is None:
        return
    desktop = Desktop.objects.filter(host=host, name=event.domain).select_related(
        "host", "pool").first()
    if desktop is not None:
        desktop_observe(desktop=desktop, power=event.power_state, seen_at=seen_at,
                        detail=event.detail)


def host_usage(sender, **kwargs) -> dict:
    """What the desktops on each host commit, for placement, the hosts API and admin."""
    reserving = Q(desktops__state__in=RESERVING_STATES)
    return {
        "used_vcpus": Sum("desktops__vcpus", filter=reserving, default=0),
        "used_memory": Sum("desktops__memory_mb", filter=reserving, default=0),
        "desktop_count": Count("desktops"),
    }


def placement_backlog(sender, **kwargs) -> int:
    """Desktops still waiting for a host."""
    return Desktop.objects.filter(host__isnull=True, state__in=UNPLACED_STATES).count()


def audit_details(sender, *, action, details, user, **kwargs):
    """A failed operation's audit entry keeps libvirt's words for platform staff only."""
    return audit_details_for(action=action, details=details, user=user)


DESKTOP_QUOTAS = frozenset({"max_desktops", "max_vcpus", "max_memory_mb"})


def quota_usage(sender, *, tenant, quotas=None, **kwargs) -> dict:
    """What the organisation's desktops (those not being deleted) count against its quotas."""
    if quotas is not None and not quotas & DESKTOP_QUOTAS:
        return {}
    desktops = Desktop.objects.filter(tenant=tenant).exclude(
        state=DesktopState.DELETING).aggregate(count=Count("id"), vcpus=Sum("vcpus"),
                                               memory=Sum("memory_mb"))
    return {"max_desktops": desktops["count"], "max_vcpus": desktops["vcpus"] or 0,
            "max_memory_mb": desktops["memory"] or 0}
