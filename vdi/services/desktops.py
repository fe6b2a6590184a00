"""Desktops: created, claimed, powered, and kept in step with what their host reports."""

from __future__ import annotations

import logging
import uuid

from django.db import connection, transaction

from hypervisors.choices import HostState
from hypervisors.drivers import (
    PowerState,
)
from tenants.audit import audited
from tenants.services import tenant_lock, tenant_require_active

from ..choices import (
    SETTLED_STATES,
    DESKTOP_MACHINE,
    POWER_OPERATIONS_FROM,
    UNFINISHED_OPERATION_STATES,
    DesktopState,
    OperationKind,
    PoolKind,
)
from .. import events
from core.errors import Conflict, InvalidInput
from ..models import Desktop, Operation, Pool
from .executors import _refresh_ports
from .operations import operation_create

logger = logging.getLogger(__name__)


# What a desktop becomes when its host reports the domain so.
_OBSERVED_STATES = {
    PowerState.RUNNING: DesktopState.RUNNING,
    PowerState.PAUSED: DesktopState.RUNNING,
    PowerState.STOPPED: DesktopState.STOPPED,
    PowerState.CRASHED: DesktopState.STOPPED,
    PowerState.MISSING: DesktopState.ERROR,
}


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
    if target == DesktopState.RUNNING:
        _refresh_ports(desktop)
        events.desktop_running.send(sender=Desktop, desktop=desktop)
    elif lost or current == DesktopState.UNKNOWN:
        events.desktop_lost.send(sender=Desktop, desktop=desktop)
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
    with transaction.atomic():
        if not DESKTOP_MACHINE.move(Desktop, desktop.pk, desktop.state, DesktopState.UNKNOWN,
                                    last_error=reason):
            return False
        desktop.state = DesktopState.UNKNOWN
        events.desktop_lost.send(sender=Desktop, desktop=desktop)
    return True


