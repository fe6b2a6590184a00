"""Pools, desktops and the operations that change them.

Web requests call the ``pool_*`` / ``desktop_*`` functions: they record intent (rows) and
enqueue work after commit. Workers call ``operation_run``, the only path to the hypervisor.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from hypervisors.choices import HostState
from hypervisors.domain_xml import DomainSpec, build_domain_xml
from hypervisors.drivers import (
    DriverError,
    NotFound,
    PowerState,
    TransientDriverError,
    Unsupported,
    driver_for,
)
from hypervisors.models import Host
from hypervisors.networks import (
    Attachment,
    NetworkUnavailable,
    tenant_attachment,
    tenant_network_ensure,
    tenant_network_release,
)
from hypervisors.services import SETTLED_STATES, host_place, host_room
from tenants.audit import audit_record, audited
from tenants.choices import AuditResult
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import quota_check_desktops, tenant_lock, tenant_require_active

from .choices import (
    DESKTOP_MACHINE,
    OPERATION_MACHINE,
    POWER_OPERATIONS_FROM,
    UNFINISHED_OPERATION_STATES,
    DesktopState,
    ImageBoot,
    OperationKind,
    PoolKind,
)
from .choices import OperationState as OpState
from . import events
from core.errors import Conflict, InvalidInput
from config.metrics import OPERATION_FAILURES, OPERATION_SECONDS, observe_seconds
from .models import Desktop, Image, Operation, Pool
from core.taskutils import send_on_commit

logger = logging.getLogger(__name__)

# What a desktop becomes when its host reports the domain so.
_OBSERVED_STATES = {
    PowerState.RUNNING: DesktopState.RUNNING,
    PowerState.PAUSED: DesktopState.RUNNING,
    PowerState.STOPPED: DesktopState.STOPPED,
    PowerState.CRASHED: DesktopState.STOPPED,
    PowerState.MISSING: DesktopState.ERROR,
}


# --- images ---------------------------------------------------------------------------------
def _image_audited(image: Image, verb: str, **details):
    """Images are the platform's: a public one's entries have no tenant, a private one's go
    into its tenant's trail."""
    return audited(action=f"image.{verb}", tenant=image.tenant, target=image,
                   details={"name": image.name, "version": image.version, **details})


def image_save(*, image: Image) -> Image:
    """Validate (Model.clean and constraints, across tenants) and save a golden image."""
    with _image_audited(image, "create" if image._state.adding else "update"), \
            scopes_disabled():
        image.full_clean()
        image.save()
    return image


def image_delete(*, image: Image) -> None:
    """Delete a golden image no pool or desktop uses any more (409 otherwise). Its base
    volumes stay on the hosts: removing them is the operator's call."""
    with _image_audited(image, "delete"), scopes_disabled():
        pools = Pool.objects.filter(image=image).count()
        desktops = Desktop.objects.filter(image=image).count()
        if pools or desktops:
            raise Conflict(
                f"Image {image.name} v{image.version} is still used by {pools} pool(s) and "
                f"{desktops} desktop(s); publish a newer version and let them move first.",
                code="image_in_use", details={"pools": pools, "desktops": desktops},
            )
        image.delete()


def image_publish(*, image: Image) -> list[Pool]:
    """Roll every pool on an older version of this image (same name, same owner) onto it.

    New desktops use it at once; the autoscaler recycles idle floating desktops onto it in
    the background; dedicated desktops keep theirs until they are reset.
    """
    with _image_audited(image, "publish") as audit, scopes_disabled():
        pools = list(Pool.objects.filter(
            image__name=image.name, image__tenant=image.tenant_id,
            image__version__lt=image.version, deleting_since__isnull=True,
        ))
        for pool in pools:
            Pool.objects.filter(pk=pool.pk).update(image=image)
            pool_autoscale_enqueue(pool)
        audit.details["pools"] = [str(pool.id) for pool in pools]
    logger.info("image %s v%d published: %d pool(s) rolling onto it", image.name,
                image.version, len(pools))
    return pools


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
        for name, value in fields.items():
            setattr(pool, name, value)
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


def pool_autoscale_enqueue(pool: Pool) -> None:
    from .tasks import pool_autoscale_task

    send_on_commit(pool_autoscale_task, str(pool.id))


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
        spares = _spares_by_intent(pool)
        short_ready = pool.min_ready - len(spares[DesktopState.RUNNING])
        short_stopped = pool.min_stopped - len(spares[DesktopState.STOPPED])
        short_stopped -= _trim(spares[DesktopState.RUNNING], surplus=-short_ready,
                               to_stopped=max(short_stopped, 0))
        _trim(spares[DesktopState.STOPPED], surplus=-short_stopped, to_stopped=0)

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


def _spares_by_intent(pool: Pool) -> dict[str, list[tuple[Desktop, Operation | None]]]:
    """The pool's unassigned desktops, grouped by what they are becoming."""
    desktops = list(Desktop.objects.filter(pool=pool, assigned_user__isnull=True)
                    .exclude(state=DesktopState.DELETING).order_by("-created_at"))
    unfinished = {
        op.desktop_id: op
        for op in Operation.objects.filter(desktop__in=desktops,
                                           state__in=UNFINISHED_OPERATION_STATES)
    }
    groups: dict[str, list] = {DesktopState.RUNNING: [], DesktopState.STOPPED: []}
    for desktop in desktops:
        intent = _intent(desktop, unfinished.get(desktop.id))
        if intent in groups:
            groups[intent].append((desktop, unfinished.get(desktop.id)))
    return groups


def _trim(spares, *, surplus: int, to_stopped: int) -> int:
    """Remove ``surplus`` settled spares (newest first): the first ``to_stopped`` are shut down
    to become stopped spares, the rest deleted. Returns how many were shut down."""
    settled = [desktop for desktop, operation in spares if operation is None]
    shut_down = 0
    for desktop in settled[:max(surplus, 0)]:
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


# --- desktops -------------------------------------------------------------------------------
def desktop_create(*, pool: Pool, actor, start: bool, assigned_user=None) -> Desktop:
    """Record a new desktop and its provisioning operation (quotas checked by the caller)."""
    desktop = Desktop.objects.create(
        tenant=pool.tenant,
        pool=pool,
        image=pool.image,
        name=f"vdi-{uuid.uuid4().hex[:16]}",
        vcpus=pool.vcpus,
        memory_mb=pool.memory_mb,
        assigned_user=assigned_user,
    )
    operation_create(desktop=desktop, kind=OperationKind.PROVISION, actor=actor,
                     params={"start": start})
    return desktop


def desktop_claim_spare(*, pool: Pool, user, state: str) -> Desktop | None:
    """Assign an unassigned desktop in ``state`` to ``user``; never the same one to two users.

    On PostgreSQL each claimer locks one row, skipping rows other claimers hold, so
    concurrent claims spread over the spares instead of queueing on the first. Everywhere
    the update is conditional on the desktop still being unassigned, so a lost race (SQLite
    serialises writers instead) just tries the next candidate.
    """
    candidates = Desktop.objects.filter(
        pool=pool, state=state, assigned_user__isnull=True,
        needs_reset=False,  # nobody's leftovers: a used desktop is reset first
        host__enabled=True, host__state=HostState.UP,  # not from drained or failing hosts
    ).exclude(
        # nor one an operation is about to change (reset after a logoff, trimmed as surplus)
        operations__state__in=UNFINISHED_OPERATION_STATES,
    ).order_by("created_at")
    if connection.features.has_select_for_update_skip_locked:
        # of=self: lock the desktop only; locking its host row too would make every other
        # claimer skip all spares on that host.
        candidates = candidates.select_for_update(skip_locked=True, of=("self",))[:1]
    else:
        candidates = candidates[:5]
    for desktop in candidates:
        claimed = Desktop.objects.filter(
            pk=desktop.pk, state=state, assigned_user__isnull=True, needs_reset=False,
        ).update(assigned_user=user)
        if claimed:
            desktop.assigned_user = user
            return desktop
    return None


def desktop_mark_used(*, desktop: Desktop) -> None:
    """Someone can reach the desktop's console now: it must go back to its image before
    anyone else may have it (``needs_reset``, cleared by the next fresh disk)."""
    Desktop.objects.filter(pk=desktop.pk, needs_reset=False).update(needs_reset=True)
    desktop.needs_reset = True


# Power operations that bring a desktop up: a suspended organisation gets none.
POWER_ON_OPERATIONS = frozenset({OperationKind.START, OperationKind.REBOOT, OperationKind.RESET})


def desktop_power(*, desktop: Desktop, kind: str, actor) -> Operation:
    """Ask for a power operation; refused at once if the desktop's state forbids it, if
    the organisation is suspended and it would power the desktop on, or if the broker
    refuses it (``desktop_power_requested``: members act only on desktops they hold)."""
    if kind not in POWER_OPERATIONS_FROM:
        raise InvalidInput(f"Unknown operation {kind!r}.", details={"kind": kind})
    with audited(action=f"desktop.{kind}", tenant=desktop.tenant, target=desktop, actor=actor,
                 details={"name": desktop.name}) as audit, transaction.atomic():
        if kind in POWER_ON_OPERATIONS:
            tenant_require_active(tenant=tenant_lock(tenant=desktop.tenant))
        desktop = Desktop.objects.select_for_update().get(pk=desktop.pk)
        if desktop.state not in POWER_OPERATIONS_FROM[kind]:
            raise Conflict(
                f"Cannot {kind} a desktop that is {desktop.state}.", code="invalid_state",
                details={"state": desktop.state},
            )
        if Operation.objects.filter(desktop=desktop, state__in=UNFINISHED_OPERATION_STATES).exists():
            raise Conflict("Another operation is in progress on this desktop.",
                           code="operation_in_progress")
        params = {"start": desktop.state == DesktopState.RUNNING} if kind == OperationKind.RESET else {}
        operation = operation_create(desktop=desktop, kind=kind, actor=actor, params=params)
        events.desktop_power_requested.send(sender=Desktop, desktop=desktop, kind=kind,
                                            actor=actor, operation=operation)
        audit.details["operation"] = str(operation.id)
        return operation


def desktop_observe(*, desktop: Desktop, power: PowerState, seen_at, detail: str = "") -> str:
    """Bring a settled desktop in line with what its host reported at ``seen_at``.

    Reconciliation and host events both land here. A desktop an operation is working on is
    left to that operation, and so is one whose state changed after the observation. A
    running desktop found stopped, or any desktop whose domain vanished, was lost outside
    the portal: that is recorded in ``last_error`` and its sessions end. Returns the new
    state, or an empty string when nothing changed.
    """
    target = _OBSERVED_STATES.get(power)
    current = desktop.state
    if target is None or target == current or current not in (*SETTLED_STATES, DesktopState.UNKNOWN):
        return ""
    if Operation.objects.filter(desktop=desktop, state__in=UNFINISHED_OPERATION_STATES).exists():
        return ""
    host = desktop.host.name if desktop.host_id else "its host"
    lost = ""
    if target == DesktopState.ERROR:
        lost = f"its domain disappeared from {host} outside the portal"
    elif current == DesktopState.RUNNING:
        why = detail or ("crashed" if power == PowerState.CRASHED else "stopped")
        lost = f"stopped outside the portal on {host} ({why})"
    fields = {"last_error": lost} if lost or current == DesktopState.UNKNOWN else {}
    if target != DesktopState.RUNNING:
        fields.update(spice_port=None, spice_tls_port=None, vnc_port=None)
    if current == DesktopState.UNKNOWN and target != DesktopState.ERROR \
            and _nobody_vouches_for(desktop):
        return _recycle_returned(desktop, start=target == DesktopState.RUNNING,
                                 seen_at=seen_at, fields=fields)
    if not DESKTOP_MACHINE.move(Desktop, desktop.pk, current, target,
                                unchanged_since=seen_at, **fields):
        return ""
    desktop.state = target
    logger.log(logging.WARNING if lost else logging.INFO, "desktop %s: %s -> %s%s",
               desktop.name, current, target, f" ({lost})" if lost else "")
    from brokers.services import sessions_end_for_desktop, sessions_ready_for_desktop

    if target == DesktopState.RUNNING:
        _refresh_ports(desktop)
        sessions_ready_for_desktop(desktop=desktop)
    elif lost or current == DesktopState.UNKNOWN:
        sessions_end_for_desktop(desktop=desktop)
    return target


def _nobody_vouches_for(desktop: Desktop) -> bool:
    """A floating desktop nobody holds: a session may have ended on it while its host was
    away, with that user's work still in it."""
    pool = desktop.pool
    return (pool.kind == PoolKind.FLOATING and not pool.is_deleting
            and not Desktop.objects.filter(pk=desktop.pk, assigned_user__isnull=False).exists())


def _recycle_returned(desktop: Desktop, *, start: bool, seen_at, fields: dict) -> str:
    """Back from an unreachable host: reset to the image before anyone may claim it."""
    with transaction.atomic():
        if not DESKTOP_MACHINE.move(Desktop, desktop.pk, DesktopState.UNKNOWN,
                                    DesktopState.RECYCLING, unchanged_since=seen_at, **fields):
            return ""
        desktop.state = DesktopState.RECYCLING
        operation_create(desktop=desktop, kind=OperationKind.RESET, actor=None,
                         params={"start": start})
    logger.info("desktop %s is back from unknown: reset before it is handed out", desktop.name)
    return DesktopState.RECYCLING


def desktop_mark_unknown(*, desktop: Desktop, reason: str) -> bool:
    """Its host stopped answering: nobody knows what the desktop is doing until it answers,
    and nobody reaches it through the portal. Its sessions end (``desktop_lost``), so its
    users' next Connect gets a desktop on a host that answers. One transaction: nobody sees
    the desktop unknown with a session still live on it."""
    from brokers.services import sessions_end_for_desktop

    with transaction.atomic():
        if not DESKTOP_MACHINE.move(Desktop, desktop.pk, desktop.state, DesktopState.UNKNOWN,
                                    last_error=reason):
            return False
        desktop.state = DesktopState.UNKNOWN
        sessions_end_for_desktop(desktop=desktop)
    return True


# --- operations -----------------------------------------------------------------------------
def operation_create(*, desktop: Desktop, kind: str, actor, params: dict | None = None) -> Operation:
    operation = Operation.objects.create(
        tenant=desktop.tenant,
        desktop=desktop,
        pool=desktop.pool,
        kind=kind,
        actor=actor,
        params=params or {},
    )
    from .tasks import operation_run_task

    send_on_commit(operation_run_task, str(operation.id))
    return operation


def operation_claim(*, operation_id) -> Operation | None:
    """Take a pending operation for this worker. A redelivered message finds it taken."""
    now = timezone.now()
    claimed = OPERATION_MACHINE.move(
        Operation, operation_id, OpState.PENDING, OpState.RUNNING,
        started_at=now,
        deadline_at=now + timedelta(seconds=settings.VDI["OPERATION_DEADLINE_S"]),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    return Operation.objects.select_related("desktop__host", "desktop__image", "pool").get(
        pk=operation_id
    )


WAITING = "waiting"
BOOT_SLOT = "boot_slot"


class _WaitForBootSlot(Exception):
    """Every boot slot on the desktop's host is taken: wait in line, don't fail."""


def operation_run(*, operation_id) -> str:
    """Run one operation. Returns its final state; ``pending`` when it should be retried after
    a transient error, ``waiting`` when it waits for a boot slot on its host."""
    operation = operation_claim(operation_id=operation_id)
    if operation is None:
        return "skipped"
    with observe_seconds(OPERATION_SECONDS, kind=operation.kind, outcome="failed") as labels:
        outcome = _operation_execute(operation)
        if outcome == WAITING:
            labels.clear()  # not a run: it waits in line for a boot slot
        elif outcome != OpState.FAILED:
            labels["outcome"] = "retry" if outcome == OpState.PENDING else outcome
    return outcome


def _operation_execute(operation: Operation) -> str:
    desktop = operation.desktop
    try:
        if desktop is None:
            raise DriverError("the desktop no longer exists")
        _EXECUTORS[operation.kind](desktop, operation)
    except _WaitForBootSlot as wait:
        # Not an attempt: the operation keeps its place in the host's line.
        OPERATION_MACHINE.move(Operation, operation.pk, OpState.RUNNING, OpState.PENDING,
                               attempts=F("attempts") - 1, error=str(wait))
        return WAITING
    except DriverError as error:
        if error.transient and operation.attempts < operation.max_attempts:
            OPERATION_MACHINE.apply(operation, OpState.PENDING, error=str(error))
            logger.info("operation %s will be retried: %s", operation.id, error)
            return OpState.PENDING
        operation_fail(operation=operation, error=str(error))
        return OpState.FAILED
    except Exception as error:  # noqa: BLE001 - recorded, then re-raised for the worker log
        operation_fail(operation=operation, error=f"internal error: {error}")
        raise
    else:
        OPERATION_MACHINE.apply(operation, OpState.SUCCEEDED, finished_at=timezone.now(),
                                error="", waiting_for="")
        _audit_outcome(operation, AuditResult.OK)
        return OpState.SUCCEEDED
    finally:
        _boot_slot_release(operation)


def operation_fail(*, operation: Operation, error: str) -> None:
    from brokers.services import sessions_fail_for_desktop

    OPERATION_MACHINE.apply(operation, OpState.FAILED, finished_at=timezone.now(), error=error)
    _audit_outcome(operation, AuditResult.FAILED, error=error)
    OPERATION_FAILURES.labels(kind=operation.kind).inc()
    desktop = Desktop.objects.filter(pk=operation.desktop_id).first()
    if desktop is not None:
        if DESKTOP_MACHINE.can(desktop.state, DesktopState.ERROR):
            DESKTOP_MACHINE.apply(desktop, DesktopState.ERROR, last_error=error)
        sessions_fail_for_desktop(desktop=desktop)
    logger.warning("operation %s (%s) failed: %s", operation.id, operation.kind, error)


def _audit_outcome(operation: Operation, result: str, error: str = "") -> None:
    """One system entry per finished operation, whoever asked for it (their own entry says
    so): ``desktop.<kind>``, ok or failed. Retries and waits in line are not entries."""
    details = {"operation": str(operation.id), "attempts": operation.attempts}
    if error:
        details["error"] = error[:500]
    audit_record(tenant=operation.tenant, actor=None, action=f"desktop.{operation.kind}",
                 target=Desktop, object_id=operation.desktop_id, result=result,
                 details=details)


def operations_reap() -> int:
    """Fail or requeue operations whose worker died (running past their deadline), and send
    again the operations whose message was lost (pending for longer than that deadline: a
    broker that restarted empty, or was down when they were enqueued)."""
    from .tasks import operation_run_task

    reaped = 0
    now = timezone.now()
    stuck = Operation.objects.filter(state=OpState.RUNNING, deadline_at__lt=now)
    for operation in stuck:
        if operation.attempts < operation.max_attempts:
            requeued = OPERATION_MACHINE.move(
                Operation, operation.pk, OpState.RUNNING, OpState.PENDING,
                error="requeued: its worker stopped answering",
            )
            if requeued:
                operation_run_task.delay(str(operation.id))
        else:
            operation_fail(operation=operation, error="timed out: its worker stopped answering")
        reaped += 1
    # A pending operation's message is due within a minute (backoff is capped at 60 s) and
    # one waiting for a boot slot is tried every few seconds, each try restarting its clock.
    # Sending one again restarts it too, so a long queue gets one extra message per deadline
    # at most; a duplicate is harmless (only one claim wins).
    forgotten = now - timedelta(seconds=settings.VDI["OPERATION_DEADLINE_S"])
    for operation_id, changed_at in Operation.objects.filter(
        state=OpState.PENDING, state_changed_at__lt=forgotten
    ).values_list("id", "state_changed_at"):
        if Operation.objects.filter(pk=operation_id, state=OpState.PENDING,
                                    state_changed_at=changed_at).update(state_changed_at=now):
            logger.warning("operation %s was pending since %s: sent again", operation_id,
                           changed_at.isoformat())
            operation_run_task.delay(str(operation_id))
            reaped += 1
    return reaped


# --- storm control: at most max_concurrent_boots starts in flight per host -----------------
def _boot_slot_take(desktop: Desktop, operation: Operation) -> None:
    """Hold one of the host's boot slots for the rest of this operation, or wait in line.

    The line is the order operations were asked for: a slot goes to this operation only if
    the operations waiting ahead of it on the same host still leave one free.
    """
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=desktop.host_id)
        booting = Operation.objects.filter(boot_host=host, state=OpState.RUNNING).exclude(
            pk=operation.pk).count()
        ahead = Operation.objects.filter(
            waiting_for=BOOT_SLOT, desktop__host=host, state__in=UNFINISHED_OPERATION_STATES,
            created_at__lt=operation.created_at,
        ).exclude(pk=operation.pk).count()
        granted = booting + ahead < host.max_concurrent_boots
        Operation.objects.filter(pk=operation.pk).update(
            boot_host=host if granted else None, waiting_for="" if granted else BOOT_SLOT
        )
    if not granted:
        raise _WaitForBootSlot(
            f"waiting for a boot slot on {host.name} ({booting} of "
            f"{host.max_concurrent_boots} in use, {ahead} waiting ahead)"
        )


def _boot_slot_release(operation: Operation) -> None:
    """Give the slot back and wake the first operation waiting for one on that host."""
    host_id = Operation.objects.filter(pk=operation.pk).values_list("boot_host", flat=True).first()
    if host_id is None:
        return
    Operation.objects.filter(pk=operation.pk).update(boot_host=None)
    next_id = (
        Operation.objects.filter(waiting_for=BOOT_SLOT, state=OpState.PENDING,
                                 desktop__host_id=host_id)
        .order_by("created_at").values_list("id", flat=True).first()
    )
    if next_id is not None:
        from .tasks import operation_run_task

        operation_run_task.delay(str(next_id))


# --- executors: run in workers, the only code that drives hosts -----------------------------
def _domain_spec(desktop: Desktop, disk_path: str, attachment: Attachment) -> DomainSpec:
    host, image = desktop.host, desktop.image
    kernel_boot = image.boot == ImageBoot.KERNEL
    return DomainSpec(
        name=desktop.name,
        uuid=str(desktop.id),
        virt_type=host.virt_type,
        vcpus=desktop.vcpus,
        memory_mb=desktop.memory_mb,
        disk_path=disk_path,
        console_address=host.console_address,
        spice_tls=bool(host.console_ca_cert),
        vnc_address=host.vnc_listen_address,
        network=attachment.network,
        traffic_filter=attachment.traffic_filter,
        traffic_filter_params=attachment.traffic_filter_params,
        kernel=image.kernel if kernel_boot else "",
        initrd=image.initrd if kernel_boot else "",
        cmdline=image.cmdline if kernel_boot else "",
        # Lab images print to a serial console: keep it where libvirt keeps guest logs.
        serial_log=f"/var/log/libvirt/qemu/{desktop.name}-serial.log" if kernel_boot else "",
        # ... and take the lab's tests' commands on a second one.
        command_socket=f"/var/lib/libvirt/qemu/{desktop.name}.cmd" if kernel_boot else "",
        title=desktop.domain_title,
        metadata={"tenant": desktop.tenant.slug, "pool": str(desktop.pool_id)},
    )


def _volume_name(desktop: Desktop) -> str:
    return f"{desktop.name}.qcow2"


def _build_disk_and_domain(desktop: Desktop, attachment: Attachment | None = None) -> None:
    """The desktop's disk and domain on its host, on its tenant's network there
    (``attachment``, when placement has just made sure of it)."""
    host, image = desktop.host, desktop.image
    driver = driver_for(host)
    if not driver.volume_exists(host.storage_pool, image.base_volume):
        if not host.is_simulated:
            raise DriverError(
                f"image base volume {image.base_volume!r} is missing from storage pool "
                f"{host.storage_pool!r} on {host.name}"
            )
        # A simulated host has no real disks: give it an empty base so clones can be made.
        try:
            driver.create_volume(host.storage_pool, image.base_volume, image.disk_gb)
        except DriverError:
            if not driver.volume_exists(host.storage_pool, image.base_volume):
                raise  # not a concurrent provisioning that created it first
    if attachment is None:
        attachment = tenant_network_ensure(host=host, tenant=desktop.tenant)
    volume = _volume_name(desktop)
    driver.delete_volume(host.storage_pool, volume)  # a half-made clone from an earlier try
    path = driver.create_overlay(host.storage_pool, volume, image.base_volume, image.disk_gb)
    try:
        driver.define(build_domain_xml(_domain_spec(desktop, path, attachment)))
    except DriverError:
        driver.delete_volume(host.storage_pool, volume)  # no orphaned clone left behind
        raise
    Desktop.objects.filter(pk=desktop.pk).update(volume_name=volume)
    desktop.volume_name = volume


def _provision(desktop: Desktop, operation: Operation) -> None:
    # A retry (a transient error, a wait for a boot slot, a worker that died) resumes where
    # the last attempt stopped: once the domain is defined, only the start is left.
    if desktop.state in (DesktopState.PENDING, DesktopState.PROVISIONING):
        DESKTOP_MACHINE.enter(desktop, DesktopState.PROVISIONING)
        attachment = _place(desktop, operation) if desktop.host_id is None else None
        _build_disk_and_domain(desktop, attachment)
        DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPED)
    if operation.params.get("start") and desktop.state != DesktopState.RUNNING:
        _start(desktop, operation)


def _place(desktop: Desktop, operation: Operation) -> Attachment:
    """Put the desktop on a host with room that can give its tenant a network of its own.
    A host that cannot is skipped for this desktop, and the reason kept on the operation
    (``params["placement_skipped"]``, by host id): never a desktop on a shared network."""
    skipped = dict(operation.params.get("placement_skipped", {}))
    while True:
        with transaction.atomic():
            host = host_place(vcpus=desktop.vcpus, memory_mb=desktop.memory_mb,
                              base_volume=desktop.image.base_volume, exclude=skipped)
            if host is None:
                reasons = "".join(f"; skipped {entry['host']}: {entry['reason']}"
                                  for entry in skipped.values())
                raise TransientDriverError(
                    "no enabled, up host has room for this desktop and the image's base "
                    f"volume {desktop.image.base_volume!r}{reasons}"
                )
            Desktop.objects.filter(pk=desktop.pk).update(host=host)
            desktop.host = host
        try:
            return tenant_network_ensure(host=host, tenant=desktop.tenant)
        except NetworkUnavailable as error:
            logger.warning("desktop %s: %s skipped: %s", desktop.name, host.name, error)
            skipped[str(host.pk)] = {"host": host.name, "reason": str(error)}
            operation.params = {**operation.params, "placement_skipped": skipped}
            Operation.objects.filter(pk=operation.pk).update(params=operation.params)
            Desktop.objects.filter(pk=desktop.pk).update(host=None)
            desktop.host = None


def desktops_traffic_filter_apply(*, tenant) -> int:
    """Put the filter the tenant's settings call for (its desktops kept in their network, or
    let out) on every desktop of the tenant that has a domain, running ones included; how
    many changed. A desktop defined meanwhile gets it from its definition."""
    changed = 0
    attachments: dict = {}
    with scopes_disabled():
        desktops = list(Desktop.objects.filter(tenant=tenant, host__isnull=False)
                        .exclude(state__in=(DesktopState.PENDING, DesktopState.DELETING))
                        .select_related("host"))
    for desktop in desktops:
        host = desktop.host
        if host.pk not in attachments:
            attachments[host.pk] = tenant_attachment(host=host, tenant=tenant)
        attachment = attachments[host.pk]
        if not attachment.traffic_filter:
            continue
        try:
            driver_for(host).interface_filter_set(
                desktop.name, attachment.traffic_filter, attachment.traffic_filter_params)
        except (NotFound, Unsupported):
            continue  # not defined yet (its definition will say), or a simulated host
        except DriverError as error:
            logger.warning("desktop %s keeps its old traffic filter: %s", desktop.name, error)
            continue
        changed += 1
    logger.info("tenant %s: traffic filter %s on %d desktop(s)", tenant.slug,
                "for egress" if tenant.desktop_egress else "keeping them in", changed)
    return changed


def _refresh_ports(desktop: Desktop) -> None:
    ports = driver_for(desktop.host).console_ports(desktop.name)
    Desktop.objects.filter(pk=desktop.pk).update(
        spice_port=ports.spice_port, spice_tls_port=ports.spice_tls_port, vnc_port=ports.vnc_port
    )


def _start(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.STARTING)
    _boot_slot_take(desktop, operation)
    driver_for(desktop.host).start(desktop.name)
    _refresh_ports(desktop)
    DESKTOP_MACHINE.apply(desktop, DesktopState.RUNNING, last_error="")
    from brokers.services import sessions_ready_for_desktop

    sessions_ready_for_desktop(desktop=desktop)


def _wait_stopped(desktop: Desktop, timeout_s: float) -> bool:
    driver = driver_for(desktop.host)
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if driver.power_state(desktop.name) in (PowerState.STOPPED, PowerState.MISSING):
            return True
        time.sleep(1)
    return False


def _stopped(desktop: Desktop) -> None:
    Desktop.objects.filter(pk=desktop.pk).update(spice_port=None, spice_tls_port=None,
                                                 vnc_port=None)
    DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPED)


def _shutdown(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.STOPPING)
    driver = driver_for(desktop.host)
    driver.shutdown(desktop.name)
    if not _wait_stopped(desktop, operation.params.get("grace_s", settings.VDI["SHUTDOWN_GRACE_S"])):
        logger.info("desktop %s ignored shutdown; powering off", desktop.name)
        driver.destroy(desktop.name)
    _stopped(desktop)


def _poweroff(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.STOPPING)
    driver_for(desktop.host).destroy(desktop.name)
    _stopped(desktop)


def _reboot(desktop: Desktop, operation: Operation) -> None:
    driver_for(desktop.host).reboot(desktop.name)


def _reset(desktop: Desktop, operation: Operation) -> None:
    """Back to the image: a fresh overlay under the same identity (name, uuid, owner)."""
    if desktop.state == DesktopState.STARTING:  # a retry: the new disk is made, start it
        _start(desktop, operation)
        return
    DESKTOP_MACHINE.enter(desktop, DesktopState.RECYCLING)
    driver_for(desktop.host).destroy(desktop.name)
    if desktop.image_id != desktop.pool.image_id:  # a new image version was published
        desktop.image = desktop.pool.image
        Desktop.objects.filter(pk=desktop.pk).update(image=desktop.image)
    _build_disk_and_domain(desktop)
    Desktop.objects.filter(pk=desktop.pk).update(needs_reset=False)  # a fresh disk
    desktop.needs_reset = False
    DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPED)
    if operation.params.get("start"):
        _start(desktop, operation)


def _delete(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.DELETING)
    if desktop.host_id:
        driver = driver_for(desktop.host)
        driver.destroy(desktop.name)
        driver.undefine(desktop.name)
        if desktop.volume_name:
            driver.delete_volume(desktop.host.storage_pool, desktop.volume_name)
    desktop.delete()
    if desktop.host_id:
        host, tenant = desktop.host, desktop.tenant
        with scopes_disabled():
            tenant_network_release(host=host, tenant=tenant, in_use=Desktop.objects.filter(
                host=host, tenant=tenant).exists)
    if desktop.pool.is_deleting:
        pool_autoscale_enqueue(desktop.pool)  # the next step of the pool's deletion


_EXECUTORS = {
    OperationKind.PROVISION: _provision,
    OperationKind.START: _start,
    OperationKind.SHUTDOWN: _shutdown,
    OperationKind.POWEROFF: _poweroff,
    OperationKind.REBOOT: _reboot,
    OperationKind.RESET: _reset,
    OperationKind.DELETE: _delete,
}

