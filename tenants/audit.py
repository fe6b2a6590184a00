"""The audit trail: who did what to which object, through what, from where, and how it ended.

Services record their mutations here, so the REST API, the portal, Django admin and tasks
all get the same entries. Who, through what and from where come from the request or task
(``core.context``); a service says what, to which object, and with which details. Refusals
and failures are recorded too. Secrets (console passwords, browser and API tokens, invite
links) never go into an entry: ``audit_record`` refuses details that name one.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, models, transaction

from core import context
from core.errors import RECORDED, Forbidden, ServiceError
from core.secrets import is_secret_key
from core.statemachine import IllegalTransition

from .choices import AuditResult
from .events import audit_details_requested
from .models import AuditEvent, Tenant

logger = logging.getLogger(__name__)


class _FromContext:
    def __repr__(self) -> str:
        return "the current request's user"


# The actor by default: the request's user, nobody (the platform) in a task.
FROM_CONTEXT = _FromContext()


def _check_no_secrets(details, path: str = "details") -> None:
    if isinstance(details, dict):
        for key, value in details.items():
            if is_secret_key(key):
                raise ValueError(f"{path}[{key!r}] looks like a secret: audit entries never "
                                 "hold one")
            _check_no_secrets(value, f"{path}[{key!r}]")
    elif isinstance(details, list | tuple):
        for value in details:
            _check_no_secrets(value, path)


def _object_ref(target, object_id) -> tuple[str, str]:
    """``target`` is the model instance acted on, or its class when there is none (yet)."""
    if object_id is None and isinstance(target, models.Model):
        object_id = target.pk
    return target._meta.label_lower, "" if object_id is None else str(object_id)


def audit_entry(*, tenant: Tenant | None, action: str, target, actor=FROM_CONTEXT,
                details: dict | None = None, result: str = AuditResult.OK,
                object_id=None, source_ip: str | None = None) -> AuditEvent:
    """An unsaved entry, with who, through what and from where taken from the context now."""
    current = context.current()
    if actor is FROM_CONTEXT:
        actor = current.user
    if not getattr(actor, "is_authenticated", False):
        actor = None
    details = details or {}
    _check_no_secrets(details)
    object_type, object_id = _object_ref(target, object_id)
    return AuditEvent(
        tenant=tenant, actor=actor, actor_name=actor.get_username() if actor else "",
        action=action, object_type=object_type, object_id=object_id, result=result,
        details=details, source=current.source, request_id=current.request_id or "",
        source_ip=source_ip or current.source_ip,
    )


def audit_record(**entry) -> AuditEvent:
    """Append one entry (see ``audit_entry`` for the arguments): ``tenant`` None for
    platform objects, ``actor`` None for the platform acting on its own."""
    event = audit_entry(**entry)
    event.save()  # not through the scoped manager: writing an entry reads nothing
    return event


def result_of(error: BaseException) -> str:
    if isinstance(error, Forbidden | PermissionDenied):
        return AuditResult.DENIED
    if isinstance(error, ServiceError | ValidationError | IllegalTransition):
        return AuditResult.REJECTED
    return AuditResult.FAILED


def _error_details(error: BaseException) -> dict:
    if isinstance(error, ServiceError):
        return {"code": error.code, "message": error.message}
    if isinstance(error, ValidationError):
        return {"code": "invalid", "message": "; ".join(error.messages)[:500]}
    return {"code": type(error).__name__, "message": str(error)[:500]}


def audit_failure(error: BaseException, **entry) -> None:
    """Record that a mutation was refused or broke, once per exception.

    The transaction it happened in rolls back, and so may an enclosing one (Django admin
    saves inside its own): the entry is written when the request or task ends, or at once
    outside one."""
    if getattr(error, RECORDED, False):
        return
    event = audit_entry(result=result_of(error), **entry)
    event.details = {**event.details, "error": _error_details(error)}
    if not context.defer(event.save):
        try:
            with transaction.atomic():  # a broken transaction must not hide the error itself
                event.save()
        except DatabaseError:
            logger.exception("the refusal of %s could not be recorded", event.action)
    setattr(error, RECORDED, True)


@dataclass
class Audit:
    """What an ``audited`` block records; the block may fill in what it learns."""

    action: str
    tenant: Tenant | None
    target: object
    actor: object = FROM_CONTEXT
    details: dict = field(default_factory=dict)
    object_id: object = None
    result: str = AuditResult.OK  # a block that ends normally may still report a failure
    skipped: bool = False

    def skip(self) -> None:
        """Nothing changed after all (e.g. already done): no entry."""
        self.skipped = True

    def entry(self) -> dict:
        return {"tenant": self.tenant, "action": self.action, "target": self.target,
                "actor": self.actor, "details": self.details, "object_id": self.object_id}


@contextmanager
def audited(*, action: str, tenant: Tenant | None, target, actor=FROM_CONTEXT,
            details: dict | None = None) -> Iterator[Audit]:
    """Record the block as one entry: ``ok`` when it finishes, else ``denied`` (Forbidden),
    ``rejected`` (bad input, state or quota) or ``failed`` (anything else), with the
    error's code and message.

    Put it around the service's ``transaction.atomic()``, not inside: the ``ok`` entry is
    then written once the change is committed, and a failure's after the rollback."""
    audit = Audit(action=action, tenant=tenant, target=target, actor=actor,
                  details=dict(details or {}),
                  # now: a deleted object has no primary key any more
                  object_id=target.pk if isinstance(target, models.Model) else None)
    try:
        yield audit
    except Exception as error:
        audit_failure(error, **audit.entry())
        raise
    if not audit.skipped:
        audit_record(result=audit.result, **audit.entry())


def audit_details_for(*, action: str, details, user):
    """An audit entry's ``details`` as ``user`` may read them: the layer that wrote the entry
    may hide what only platform staff read (tenants/events.py)."""
    for _receiver, shown in audit_details_requested.send(sender=AuditEvent, action=action,
                                                          details=details, user=user):
        if shown is not None:
            details = shown
    return details
