"""Pools: created, changed and deleted, and kept at their spare count (the autoscaler)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from hypervisors.services import host_room
from tenants.audit import audit_record, audited
from tenants.scoping import tenant_scope
from tenants.services import quota_check_desktops, tenant_lock, tenant_require_active

from ..choices import (
    UNFINISHED_OPERATION_STATES,
    DesktopState,
    OperationKind,
    PoolKind,
)
from .. import events
from core.modelutils import model_update
from core.errors import Conflict
from ..models import Desktop, Operation, Pool
from .desktops import desktop_create
from .operations import operation_create, pool_autoscale_enqueue

logger = logging.getLogger(__name__)


# --- pools ----------------------------------------------------------------------------------
def _changes(fields: dict) -> dict:
    """The fields a pool write sets, as the audit trail keeps them (objects by id)."""
    return {name: getattr(value, "pk", value) for name, value in fields.items()}


def pool_create(*, tenant, actor, **fields) -> Pool:
    pool = Pool(tenant=tenant, **fields)
    with audited(action="pool.create", tenant=tenant, target=pool, actor=actor,
                 details=_changes(fields)):
        tenant_require_active(tenant=tenant)
        return _pool_save(pool)


def pool_update(*, pool: Pool, actor, **fields) -> Pool:
    with audited(action="pool.update", tenant=pool.tenant, target=pool, actor=actor,
                 details=_changes(fields)):
        model_update(pool, fields)
        return _pool_save(pool)


def pool_save(*, pool: Pool, actor, changed: list[str] | None = None) -> Pool:
    """Save a pool edited as a whole (Django admin); ``changed`` names the fields edited."""
    with audited(action="pool.create" if pool._state.adding else "pool.update",
                 tenant=pool.tenant, target=pool, actor=actor,
                 details={"changed": changed or []}):
        return _pool_save(pool)


def _pool_save(pool: Pool) -> Pool:
    """Validate and save a new or changed pool; the autoscaler applies the change at once
    (new sizes, a new image)."""
    if pool.is_deleting:
        raise Conflict("This pool is being deleted.", code="pool_deleting")
    with transaction.atomic(), tenant_scope(pool.tenant):
        pool.full_clean()  # validation (unique names, visible image) in the tenant
        pool.save()
        # Disabled, or entitlements narrowed: sessions of users who lost the pool end.
        events.pool_access_changed.send(sender=Pool, pool=pool, actor=None)
    pool_autoscale_enqueue(pool)
    return pool


def pool_entitlements_changed(*, pool: Pool, actor) -> None:
    """The pool's list of entitled users was edited (Django admin's inline)."""
    with transaction.atomic():
        events.pool_access_changed.send(sender=Pool, pool=pool, actor=actor)




def pool_autoscale(*, pool: Pool) -> list[Desktop]:
    """Keep the pool's spares at ``min_ready`` running and ``min_stopped`` stopped desktops.

    Spares are counted by what they will be once their operation finishes, so a spare still
    being made or stopped is not made twice. Missing spares are created at once, as many as
    ``max_desktops``, the tenant's quotas and the hosts' free capacity allow (storm control
    then paces their boots per host). Surplus spares are trimmed: a running one becomes a
    stopped spare if those are short, else it is deleted. Then idle desktops still on an
    older image are recycled onto the pool's image. A pool being deleted is emptied instead.
    Returns the desktops created.
    """
    if pool.is_deleting:
        _pool_empty(pool)
        return []
    if not pool.enabled or not pool.tenant.is_active:
        return []
    created: list[Desktop] = []
    with transaction.atomic():
        tenant = tenant_lock(tenant=pool.tenant)
        _reset_released(pool)
        spares = _spare_counts(pool)
        short_ready = pool.min_ready - spares[DesktopState.RUNNING]
        short_stopped = pool.min_stopped - spares[DesktopState.STOPPED]
        short_stopped -= _trim(pool, DesktopState.RUNNING, surplus=-short_ready,
                               to_stopped=max(short_stopped, 0))
        _trim(pool, DesktopState.STOPPED, surplus=-short_stopped, to_stopped=0)

        wanted = [True] * max(short_ready, 0) + [False] * max(short_stopped, 0)
        in_pool = Desktop.objects.filter(pool=pool).exclude(state=DesktopState.DELETING).count()
        room = host_room(vcpus=pool.vcpus, memory_mb=pool.memory_mb,
                         base_volume=pool.image.base_volume)
        for start in wanted[:max(0, min(pool.max_desktops - in_pool, room))]:
            try:
                quota_check_desktops(tenant=tenant, vcpus=pool.vcpus, memory_mb=pool.memory_mb)
            except Conflict as error:
                logger.info("pool %s not topped up: %s", pool.id, error.message)
                break
            created.append(desktop_create(pool=pool, actor=None, start=start))
        if len(created) < len(wanted):
            logger.info("pool %s: %d of %d missing spares made (max_desktops %d, room on "
                        "hosts for %d)", pool.id, len(created), len(wanted), pool.max_desktops,
                        room)
        _roll_onto_image(pool)
    return created


def _intent(desktop: Desktop, operation: Operation | None) -> str | None:
    """What the desktop will be once its unfinished operation (if any) is done."""
    if operation is None:
        return {DesktopState.RUNNING: DesktopState.RUNNING,
                DesktopState.STOPPED: DesktopState.STOPPED}.get(desktop.state)
    if operation.kind in (OperationKind.PROVISION, OperationKind.RESET):
        return DesktopState.RUNNING if operation.params.get("start") else DesktopState.STOPPED
    if operation.kind in (OperationKind.START, OperationKind.REBOOT):
        return DesktopState.RUNNING
    if operation.kind in (OperationKind.SHUTDOWN, OperationKind.POWEROFF):
        return DesktopState.STOPPED
    return None  # being deleted


def _spare_counts(pool: Pool) -> dict[str, int]:
    """How many of the pool's unassigned desktops will be running and stopped once their
    unfinished operation (if any) is done. The settled ones are counted in the database; only
    the few with an operation in flight are read, to see what they are becoming."""
    counts = {DesktopState.RUNNING: 0, DesktopState.STOPPED: 0}
    settled = _settled_spares(pool).values_list("state").annotate(n=Count("pk")).order_by()
    for state, n in settled:
        counts[state] += n
    in_flight = {
        op.desktop_id: op for op in Operation.objects.filter(
            desktop__pool=pool, desktop__assigned_user__isnull=True,
            state__in=UNFINISHED_OPERATION_STATES,
        ).exclude(desktop__state=DesktopState.DELETING).select_related("desktop")
    }
    for operation in in_flight.values():
        intent = _intent(operation.desktop, operation)
        if intent in counts:
            counts[intent] += 1
    return counts


def _settled_spares(pool: Pool, state: str | None = None):
    """The pool's unassigned running or stopped desktops that no operation is busy with."""
    busy = Operation.objects.filter(desktop=OuterRef("pk"), state__in=UNFINISHED_OPERATION_STATES)
    states = (state,) if state else (DesktopState.RUNNING, DesktopState.STOPPED)
    return (Desktop.objects.filter(pool=pool, assigned_user__isnull=True, state__in=states)
            .exclude(Exists(busy)))


def _trim(pool: Pool, state: str, *, surplus: int, to_stopped: int) -> int:
    """Remove ``surplus`` settled spares in ``state`` (newest first): the first ``to_stopped``
    running ones are shut down to become stopped spares, the rest deleted. Returns how many
    were shut down."""
    if surplus <= 0:
        return 0
    shut_down = 0
    for desktop in _settled_spares(pool, state).order_by("-created_at")[:surplus]:
        if desktop.state == DesktopState.RUNNING and shut_down < to_stopped:
            operation_create(desktop=desktop, kind=OperationKind.SHUTDOWN, actor=None)
            shut_down += 1
        else:
            operation_create(desktop=desktop, kind=OperationKind.DELETE, actor=None)
    return shut_down


def _reset_released(pool: Pool) -> None:
    """Reset used desktops nobody holds any more, once they settle: what a logoff during
    another operation, a removed member or a broken desktop's recovery left behind. Until
    then nobody can claim them (``needs_reset``)."""
    released = (Desktop.objects.filter(pool=pool, assigned_user__isnull=True, needs_reset=True,
                                       state__in=(DesktopState.RUNNING, DesktopState.STOPPED))
                .exclude(operations__state__in=UNFINISHED_OPERATION_STATES))
    for desktop in released:
        operation_create(desktop=desktop, kind=OperationKind.RESET, actor=None,
                         params={"start": desktop.state == DesktopState.RUNNING})


def _roll_onto_image(pool: Pool) -> None:
    """Recycle idle floating desktops still on an older image onto the pool's image.

    Idle means unassigned and settled. Running spares go a few at a time so the pool keeps
    most of its ready spares during a roll-out; stopped ones all at once (no boot needed).
    Dedicated desktops keep their image until reset.
    """
    if pool.kind != PoolKind.FLOATING:
        return
    idle = (Desktop.objects.filter(pool=pool, assigned_user__isnull=True,
                                   state__in=(DesktopState.RUNNING, DesktopState.STOPPED))
            .exclude(image=pool.image_id)
            .exclude(operations__state__in=UNFINISHED_OPERATION_STATES))
    recycling = Operation.objects.filter(pool=pool, kind=OperationKind.RESET,
                                         state__in=UNFINISHED_OPERATION_STATES,
                                         params__start=True).count()
    running_budget = max(1, pool.min_ready // 2) - recycling
    for desktop in idle.order_by("created_at"):
        running = desktop.state == DesktopState.RUNNING
        if running:
            if running_budget <= 0:
                continue
            running_budget -= 1
        operation_create(desktop=desktop, kind=OperationKind.RESET, actor=None,
                         params={"start": running, "rollout": True})


def pool_delete(*, pool: Pool, actor) -> Pool:
    """Delete a pool: it is disabled at once, its sessions end, its desktops (domains and
    overlays) are deleted in the background, and the pool row goes last."""
    with audited(action="pool.delete", tenant=pool.tenant, target=pool, actor=actor,
                 details={"name": pool.name}) as audit, transaction.atomic():
        pool = Pool.objects.select_for_update().get(pk=pool.pk)
        if pool.is_deleting:
            audit.skip()  # asked again while it empties: nothing new
        else:
            pool.deleting_since, pool.enabled = timezone.now(), False
            pool.save(update_fields=["deleting_since", "enabled"])
            events.pool_access_changed.send(sender=Pool, pool=pool, actor=actor)
            logger.info("pool %s (%s) is being deleted by %s", pool.id, pool.name, actor)
        pool_autoscale_enqueue(pool)
    return pool


def _pool_empty(pool: Pool) -> None:
    """One step of a pool's deletion: delete the desktops no operation is busy with; once
    none is left, the pool and its history go. Repeated by beat and after each delete."""
    with transaction.atomic():
        desktops = Desktop.objects.filter(pool=pool)
        busy = set(Operation.objects.filter(
            desktop__in=desktops, state__in=UNFINISHED_OPERATION_STATES
        ).values_list("desktop_id", flat=True))
        for desktop in desktops:
            if desktop.id not in busy and desktop.state != DesktopState.DELETING:
                operation_create(desktop=desktop, kind=OperationKind.DELETE, actor=None)
        if not desktops.exists():
            Operation.objects.filter(pool=pool).delete()
            audit_record(tenant=pool.tenant, actor=None, action="pool.delete", target=pool,
                         details={"name": pool.name, "finished": True})
            pool.delete()
            logger.info("pool %s (%s) deleted", pool.id, pool.name)


