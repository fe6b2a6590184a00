from __future__ import annotations

from datetime import date, datetime

from django.db.models import QuerySet
from django.utils import timezone

from .models import AuditEvent, Membership, MonthlyUsage, Tenant
from .scoping import scopes_disabled, tenant_scope
from .services import quota_in_use
from .usage import month_bounds, usage_for_month


def tenant_list_for_user(*, user) -> QuerySet[Tenant]:
    """Tenants the user belongs to (every tenant for platform staff)."""
    if user.is_staff:
        return Tenant.objects.all()
    with scopes_disabled():
        tenant_ids = list(Membership.objects.filter(user=user).values_list("tenant_id", flat=True))
    return Tenant.objects.filter(id__in=tenant_ids)


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


def quota_usage(*, tenant: Tenant) -> list[dict]:
    """Each quota of the tenant with what is in use against it, as the quota checks count it:
    desktops not being deleted (with their vCPUs and memory) and live sessions. ``limit`` is
    None for an unlimited quota."""
    used = quota_in_use(tenant=tenant)
    return [
        {"quota": "max_desktops", "label": "Desktops", "unit": "",
         "used": used.get("max_desktops", 0), "limit": tenant.max_desktops},
        {"quota": "max_vcpus", "label": "vCPUs", "unit": "",
         "used": used.get("max_vcpus", 0), "limit": tenant.max_vcpus},
        {"quota": "max_memory_mb", "label": "Memory", "unit": "MiB",
         "used": used.get("max_memory_mb", 0), "limit": tenant.max_memory_mb},
        {"quota": "max_sessions", "label": "Concurrent sessions", "unit": "",
         "used": used.get("max_sessions", 0), "limit": tenant.max_sessions},
    ]


def month_list(*, count: int, until: date) -> list[date]:
    """The first days of the ``count`` months up to and including ``until``'s, oldest first."""
    months = []
    year, month = until.year, until.month
    for _ in range(count):
        months.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months[::-1]


def usage_history(*, tenant: Tenant, months: list[date], now: datetime | None = None) -> list[dict]:
    """The tenant's figures for each of ``months``: a finished month as the beat stored it
    (once computed after the month ended), any other computed from the journal now."""
    now = now or timezone.now()
    with tenant_scope(tenant):
        stored = {row.month: row for row in MonthlyUsage.objects.filter(month__in=months)}
    history = []
    for month in months:
        row = stored.get(month)
        if row is not None and row.computed_at >= month_bounds(month)[1]:
            history.append({
                "month": month.strftime("%Y-%m"), "desktop_hours": row.desktop_hours,
                "session_hours": row.session_hours, "vcpu_hours": row.vcpu_hours,
                "memory_gb_hours": row.memory_gb_hours, "peak_sessions": row.peak_sessions,
                "complete": True, "computed_at": row.computed_at,
            })
        else:
            history.append(usage_for_month(tenant=tenant, month=month, now=now))
    return history


def audit_list(*, tenant: Tenant) -> QuerySet[AuditEvent]:
    """The tenant's audit trail, newest first (``actor_name`` names the actor, even one whose
    account is gone)."""
    return AuditEvent.objects.filter(tenant=tenant).order_by("-created_at")
