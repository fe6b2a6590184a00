"""A worker runs an operation: it claims the row, runs the kind's executor, and records the
outcome (done, retry later, wait for a boot slot, failed)."""


from __future__ import annotations

import logging

from django.db.models import F
from django.utils import timezone

from hypervisors.drivers import (
    DriverError,
)
from tenants.choices import AuditResult

from ..choices import (
    OPERATION_MACHINE,
)
from ..choices import OperationState as OpState
from core.metrics import OPERATION_SECONDS, observe_seconds
from ..models import Operation
from .executors import _EXECUTORS
from .operations import (
    WAITING,
    _audit_outcome,
    _boot_slot_release,
    _WaitForBootSlot,
    operation_claim,
    operation_fail,
)

logger = logging.getLogger(__name__)


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


