"""Tenants and their quotas; members and invitations are in ``members.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from core.modelutils import model_update
from core.errors import Conflict, Forbidden, InvalidInput, QuotaExceeded

from .audit import audited
from .choices import Role, TenantStatus
from .events import quota_usage_requested, tenant_egress_changed, tenant_suspended
from .models import Membership, Tenant
from .scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)


def tenant_create(*, slug: str, name: str, owner=None, **quotas) -> Tenant:
    """A new organisation. A quota not given is the platform's default
    (``VDI["DEFAULT_TENANT_QUOTAS"]``, the model's field default); one given as None is
    unlimited."""
    tenant = Tenant(slug=slug, name=name, **quotas)
    details = {"slug": slug, "owner": owner.get_username() if owner else None}
    # A refused one is a platform entry: the organisation it names does not exist.
    with audited(action="tenant.create", tenant=None, target=tenant, details=details) as audit:
        with transaction.atomic():
            tenant.full_clean()
            tenant.save()
            if owner is not None:
                membership_add(tenant=tenant, user=owner, role=Role.OWNER)
        audit.tenant = tenant
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


def tenant_set_status(*, tenant: Tenant, status: str, actor) -> Tenant:
    """Suspend or resume an organisation. Suspended, it can neither connect nor provision,
    and nobody in it keeps access: ``tenant_suspended`` is sent in the transaction, and the
    broker ends every live session (reason ``admin``). Audited; the status it already has
    changes nothing."""
    if status not in TenantStatus.values:
        raise InvalidInput("The request is not valid.", details={
            "status": [f"Choose one of: {', '.join(TenantStatus.values)}."]})
    with audited(action=f"tenant.{status}", tenant=tenant, target=tenant,
                 actor=actor) as audit, transaction.atomic():
        tenant = tenant_lock(tenant=tenant)
        if tenant.status == status:
            audit.skip()
            return tenant
        previous, tenant.status = tenant.status, status
        tenant.save(update_fields=["status"])
        audit.details = {"from": previous, "to": status}
        if status == TenantStatus.SUSPENDED:
            tenant_suspended.send(sender=Tenant, tenant=tenant, actor=actor)
    return tenant


TENANT_QUOTAS = ("max_desktops", "max_vcpus", "max_memory_mb", "max_sessions")
# What an organisation's own owners may change; platform staff change all of these.
TENANT_OWNER_FIELDS = frozenset({"name", "desktop_egress"})
TENANT_STAFF_FIELDS = frozenset({"name", "status", "desktop_egress", *TENANT_QUOTAS})


def tenant_update(*, tenant: Tenant, actor, **changes) -> Tenant:
    """Change an organisation: platform staff its name, quotas (None: unlimited) and
    status, its owners only its name (anything else is 403). Every value is checked before
    anything changes. A status change is ``tenant_set_status``'s, with its effects and its
    own entry; the rest is one ``tenant.update`` entry with each field's old and new value
    (none when nothing changed)."""
    with audited(action="tenant.update", tenant=tenant, target=tenant, actor=actor,
                 details={"fields": sorted(changes)}) as audit, transaction.atomic():
        unknown = sorted(set(changes) - TENANT_STAFF_FIELDS)
        if unknown:
            raise InvalidInput("The request is not valid.", details={
                name: ["This field can't be changed."] for name in unknown})
        if not getattr(actor, "is_staff", False):
            if actor_role(tenant=tenant, actor=actor) != Role.OWNER:
                raise Forbidden("Only the organisation's owners (and platform staff) may "
                                "change it.")
            if set(changes) - TENANT_OWNER_FIELDS:
                raise Forbidden("An owner may change the organisation's name and whether its "
                                "desktops reach beyond their network; its quotas and status "
                                "are set by platform staff.")
        tenant = tenant_lock(tenant=tenant)
        status = changes.pop("status", tenant.status)
        previous_status = tenant.status
        changed = model_update(tenant, changes)
        tenant.status = status
        tenant.full_clean()
        tenant.status = previous_status  # tenant_set_status changes it, with its effects
        if changed:
            tenant.save(update_fields=list(changed))
        audit.details = {"changed": changed}
        if not changed:
            audit.skip()
        if "desktop_egress" in changed:
            tenant_egress_changed.send(sender=Tenant, tenant=tenant, actor=actor)
        if status != previous_status:
            tenant = tenant_set_status(tenant=tenant, status=status, actor=actor)
    return tenant


def tenant_require_active(*, tenant: Tenant) -> None:
    if not tenant.is_active:
        raise Conflict("This organisation is suspended.", code="tenant_suspended")


def quota_in_use(*, tenant: Tenant, quotas: frozenset[str] | None = None) -> dict[str, int]:
    """What is in use against the organisation's quotas (``quotas``, else all), as the
    layers that hold the things counted report it (tenants/events.py)."""
    used = {}
    with scopes_disabled():
        for _receiver, counted in quota_usage_requested.send(sender=Tenant, tenant=tenant,
                                                             quotas=quotas):
            used.update(counted)
    return used


DESKTOP_QUOTAS = frozenset({"max_desktops", "max_vcpus", "max_memory_mb"})


def quota_check_desktops(*, tenant: Tenant, vcpus: int, memory_mb: int, count: int = 1) -> None:
    """Raise QuotaExceeded if ``count`` more desktops of this size would pass a quota.

    Call it inside a transaction after ``tenant_lock``.
    """
    if tenant.max_desktops is None and tenant.max_vcpus is None and tenant.max_memory_mb is None:
        return
    usage = quota_in_use(tenant=tenant, quotas=DESKTOP_QUOTAS)
    checks = (
        ("max_desktops", tenant.max_desktops, usage.get("max_desktops", 0) + count),
        ("max_vcpus", tenant.max_vcpus, usage.get("max_vcpus", 0) + vcpus * count),
        ("max_memory_mb", tenant.max_memory_mb, usage.get("max_memory_mb", 0) + memory_mb * count),
    )
    for quota, limit, wanted in checks:
        if limit is not None and wanted > limit:
            raise QuotaExceeded(
                f"The organisation's {quota} quota ({limit}) would be exceeded.",
                details={"quota": quota, "limit": limit, "requested": wanted},
            )


def quota_check_sessions(*, tenant: Tenant, live_sessions: Callable[[], int]) -> None:
    """Refuse one more live session past ``max_sessions``. ``live_sessions`` counts them,
    and is called only when the tenant has that quota (counting is a scan of its sessions)."""
    if tenant.max_sessions is not None and live_sessions() + 1 > tenant.max_sessions:
        raise QuotaExceeded(
            f"The organisation's max_sessions quota ({tenant.max_sessions}) is reached.",
            details={"quota": "max_sessions", "limit": tenant.max_sessions},
        )


def actor_role(*, tenant: Tenant, actor) -> str | None:
    """The actor's rights in the tenant: their role, ``owner`` for platform staff who are
    not members (they may act in any tenant), else None."""
    with tenant_scope(tenant):
        role = Membership.objects.filter(user=actor).values_list("role", flat=True).first()
    if role is None and getattr(actor, "is_staff", False):
        return Role.OWNER
    return role
