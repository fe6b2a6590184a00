"""Operations: every state change of a desktop is a row, claimed once, run by a worker,
retried, failed or reaped; and the hosts' boot slots (storm control)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from hypervisors.models import Host
from tenants.audit import audit_record
from tenants.choices import AuditResult
from tenants.scoping import scopes_disabled

from ..choices import (
    DESKTOP_MACHINE,
    OPERATION_MACHINE,
    UNFINISHED_OPERATION_STATES,
    DesktopState,
)
from ..choices import OperationState as OpState
from core.metrics import OPERATION_FAILURES
from .. import events
from ..models import Desktop, Operation, Pool
from core.taskutils import send, send_on_commit, task_named

logger = logging.getLogger(__name__)

AUTOSCALE_REQUEUE = timedelta(seconds=60)


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
    send_on_commit("vdi.operation_run", str(operation.id))
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






def operation_fail(*, operation: Operation, error: str) -> None:
    OPERATION_MACHINE.apply(operation, OpState.FAILED, finished_at=timezone.now(), error=error)
    _audit_outcome(operation, AuditResult.FAILED, error=error)
    OPERATION_FAILURES.labels(kind=operation.kind).inc()
    desktop = Desktop.objects.filter(pk=operation.desktop_id).first()
    if desktop is not None:
        if DESKTOP_MACHINE.can(desktop.state, DesktopState.ERROR):
            DESKTOP_MACHINE.apply(desktop, DesktopState.ERROR, last_error=error)
        events.desktop_failed.send(sender=Desktop, desktop=desktop)
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
    operation_run_task = task_named("vdi.operation_run")
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
        task_named("vdi.operation_run").delay(str(next_id))


def pool_autoscale_enqueue(pool: Pool) -> None:
    """Once the transaction commits, queue a run of the pool's autoscaler, unless one is
    queued and has not started: it will count the spares as they are when it starts, this
    commit included. A storm of Connects so queues a run or two, not one per Connect. A mark
    older than AUTOSCALE_REQUEUE is a run lost with its message: another is queued."""
    pool_id = pool.pk

    def queue():
        now = timezone.now()
        with scopes_disabled():
            marked = (Pool.objects.filter(pk=pool_id)
                      .filter(Q(autoscale_queued_at__isnull=True)
                              | Q(autoscale_queued_at__lt=now - AUTOSCALE_REQUEUE))
                      .update(autoscale_queued_at=now))
            if marked and not send("vdi.pool_autoscale", str(pool_id)):
                Pool.objects.filter(pk=pool_id).update(autoscale_queued_at=None)

    transaction.on_commit(queue)


def pool_autoscale_started(pool_id) -> None:
    """The run queued for the pool starts: a change committed from now on queues the next."""
    with scopes_disabled():
        Pool.objects.filter(pk=pool_id).update(autoscale_queued_at=None)


