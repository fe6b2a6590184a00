"""Tenants, memberships and quotas."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Sum

from vdi.errors import Conflict, QuotaExceeded

from .choices import Role
from .models import AuditEvent, Membership, Tenant
from .scoping import scopes_disabled, tenant_scope


def tenant_create(*, slug: str, name: str, owner=None, **quotas) -> Tenant:
    with transaction.atomic():
        tenant = Tenant(slug=slug, name=name, **quotas)
        tenant.full_clean()
        tenant.save()
        if owner is not None:
            membership_add(tenant=tenant, user=owner, role=Role.OWNER)
    return tenant


def membership_add(*, tenant: Tenant, user, role: str = Role.MEMBER) -> Membership:
    membership = Membership(tenant=tenant, user=user, role=role)
    with tenant_scope(tenant):
        membership.full_clean()
        membership.save()
    return membership


def tenant_lock(*, tenant: Tenant) -> Tenant:
    """Lock the tenant row for the rest of the transaction: quota checks then serialise."""
    return Tenant.objects.select_for_update().get(pk=tenant.pk)


def tenant_require_active(*, tenant: Tenant) -> None:
    if not tenant.is_active:
        raise Conflict("This organisation is suspended.", code="tenant_suspended")


def quota_check_desktops(*, tenant: Tenant, vcpus: int, memory_mb: int, count: int = 1) -> None:
    """Raise QuotaExceeded if ``count`` more desktops of this size would pass a quota.

    Call it inside a transaction after ``tenant_lock``.
    """
    from vdi.choices import DesktopState
    from vdi.models import Desktop

    if tenant.max_desktops is None and tenant.max_vcpus is None and tenant.max_memory_mb is None:
        return
    with scopes_disabled():
        usage = Desktop.objects.filter(tenant=tenant).exclude(
            state=DesktopState.DELETING
        ).aggregate(desktops=Count("id"), vcpus=Sum("vcpus"), memory=Sum("memory_mb"))
    checks = (
        ("max_desktops", tenant.max_desktops, usage["desktops"] + count),
        ("max_vcpus", tenant.max_vcpus, (usage["vcpus"] or 0) + vcpus * count),
        ("max_memory_mb", tenant.max_memory_mb, (usage["memory"] or 0) + memory_mb * count),
    )
    for quota, limit, wanted in checks:
        if limit is not None and wanted > limit:
            raise QuotaExceeded(
                f"The organisation's {quota} quota ({limit}) would be exceeded.",
                details={"quota": quota, "limit": limit, "requested": wanted},
            )


def quota_check_sessions(*, tenant: Tenant, live_sessions: int) -> None:
    if tenant.max_sessions is not None and live_sessions + 1 > tenant.max_sessions:
        raise QuotaExceeded(
            f"The organisation's max_sessions quota ({tenant.max_sessions}) is reached.",
            details={"quota": "max_sessions", "limit": tenant.max_sessions},
        )


def audit_record(*, tenant: Tenant, actor, action: str, target, details: dict | None = None,
                 source_ip: str | None = None) -> AuditEvent:
    """Append one entry to the tenant's audit trail. ``target`` is the model instance acted
    on. Never put secrets (passwords, tokens) in ``details``."""
    return AuditEvent.objects.create(
        tenant=tenant, actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action, object_type=target._meta.label_lower, object_id=str(target.pk),
        details=details or {}, source_ip=source_ip,
    )
