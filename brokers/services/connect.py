"""Connect and takeover: a user gets a desktop, or an admin takes one over.

Connect hands a user a desktop: their live session's, else a ready spare claimed atomically,
else a stopped spare started or a new desktop provisioned (answered as pending). A ready
session comes with a console ticket (``tickets.py``). Every step obeys the holder rule
(``brokers/holding.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from hypervisors.services import host_room
from tenants.audit import audited
from tenants.services import (
    quota_check_desktops,
    quota_check_sessions,
    tenant_lock,
    tenant_require_active,
)
from vdi.choices import (
    UNFINISHED_OPERATION_STATES,
    DesktopState,
    OperationKind,
    PoolKind,
)
from core.errors import Conflict
from vdi.models import Desktop, Operation, Pool
from vdi.services import (
    desktop_claim_spare,
    desktop_create,
    desktop_mark_used,
    operation_create,
    pool_autoscale_enqueue,
)

from ..choices import LIVE_SESSION_STATES, SESSION_MACHINE, EndReason, SessionState
from ..holding import READY_STATES, live_sessions, pool_access_require
from ..models import Session
from .sessions import _session_close, session_end
from .tickets import IssuedTicket, ticket_issue

# The log keeps its name from before the package (operators' filters and the console proxy's
# token mask name it).
logger = logging.getLogger("brokers.services")

# The database's name for the holder rule's one-live-session-per-desktop constraint.
ONE_LIVE_SESSION = "session_one_live_per_desktop"


@dataclass
class ConnectResult:
    session: Session
    ticket: IssuedTicket | None = None

    @property
    def pending(self) -> bool:
        return self.ticket is None


# --- connect --------------------------------------------------------------------------------
def session_connect(*, user, pool: Pool) -> ConnectResult:
    """Connect ``user`` to ``pool``: their live session there, else a new one. A ready
    session comes with a console ticket (issued and audited on its own)."""
    with audited(action="session.connect", tenant=pool.tenant, target=pool,
                 actor=user) as audit:
        session = _session_for(user=user, pool=pool)
        audit.details = {"session": session.id, "desktop": session.desktop_id,
                         "state": session.state}
    if session.state in READY_STATES:
        return ConnectResult(session=session, ticket=ticket_issue(session=session, user=user))
    return ConnectResult(session=session)


def _session_for(*, user, pool: Pool) -> Session:
    pool_access_require(pool=pool, user=user)
    try:
        with transaction.atomic():
            tenant = tenant_lock(tenant=pool.tenant)
            tenant_require_active(tenant=tenant)  # suspended while we waited for the lock
            session = (
                Session.objects.select_for_update(of=("self",))
                .filter(pool=pool, user=user, state__in=LIVE_SESSION_STATES)
                .select_related("desktop")
                .order_by("-created_at")
                .first()
            )
            if session is not None and _desktop_lost(session):
                session_end(session=session, actor=None, reason=EndReason.DESKTOP_LOST)
                session = None
            if session is None:
                quota_check_sessions(tenant=tenant,
                                     live_sessions=live_sessions(tenant=tenant).count)
                session = _session_open(tenant=tenant, pool=pool, user=user)
                pool_autoscale_enqueue(pool)
    except IntegrityError as error:
        if ONE_LIVE_SESSION not in str(error):
            raise
        # Another session took the desktop between our look and our write: its holder wins.
        raise Conflict("This desktop is in use by another session; try again.",
                       code="desktop_held") from None
    return session


def _desktop_lost(session: Session) -> bool:
    """The session's desktop is gone or broken: reusing the session would never connect."""
    desktop = session.desktop
    return desktop is None or desktop.state in (DesktopState.ERROR, DesktopState.DELETING)


def _session_open(*, tenant, pool: Pool, user) -> Session:
    """Find or make a desktop for a new session, inside the caller's transaction."""
    # The user's own desktop first: a dedicated pool's, or a floating one kept at logoff.
    # One query: usually nothing (a floating pool's user holds no desktop between sessions).
    held = list(Desktop.objects.filter(pool=pool, assigned_user=user)
                .exclude(state=DesktopState.DELETING).order_by("created_at"))
    desktop = next((d for d in held if d.state != DesktopState.ERROR), None)
    if desktop is None and len(held) >= pool.max_per_user:
        raise Conflict(
            f"You already hold {pool.max_per_user} desktop(s) in this pool; ask an "
            "administrator to reset or delete the broken one.", code="max_per_user",
            details={"max_per_user": pool.max_per_user},
        )
    if desktop is not None and live_sessions(desktop=desktop).exists():
        # Only a takeover leaves the owner's desktop in someone else's live session.
        raise Conflict("An administrator has taken your desktop over; connect again once "
                       "they are done.", code="desktop_taken_over")
    if desktop is None:
        desktop = desktop_claim_spare(pool=pool, user=user, state=DesktopState.RUNNING)
    if desktop is None:
        desktop = desktop_claim_spare(pool=pool, user=user, state=DesktopState.STOPPED)
    if desktop is None:
        in_pool = Desktop.objects.filter(pool=pool).exclude(state=DesktopState.DELETING).count()
        if in_pool >= pool.max_desktops:
            raise Conflict(
                "Every desktop in this pool is in use; try again later.", code="pool_exhausted",
                details={"max_desktops": pool.max_desktops},
            )
        quota_check_desktops(tenant=tenant, vcpus=pool.vcpus, memory_mb=pool.memory_mb)
        if not host_room(vcpus=pool.vcpus, memory_mb=pool.memory_mb,
                         base_volume=pool.image.base_volume):
            raise Conflict("No host has room for another desktop right now; try again later.",
                           code="no_capacity")
        desktop = desktop_create(pool=pool, actor=user, start=True, assigned_user=user)

    if desktop.state == DesktopState.RUNNING:
        return _session_create(tenant=tenant, pool=pool, user=user, desktop=desktop)
    operation = (
        Operation.objects.filter(desktop=desktop, state__in=UNFINISHED_OPERATION_STATES).first()
    )
    if operation is None and desktop.state == DesktopState.STOPPED:
        operation = operation_create(desktop=desktop, kind=OperationKind.START, actor=user)
    return Session.objects.create(
        tenant=tenant, pool=pool, user=user, desktop=desktop, operation=operation
    )


def _session_create(*, tenant, pool: Pool, user, desktop: Desktop) -> Session:
    """A ready session on a running desktop: from now on its user can reach the console, so
    the desktop must go back to its image before anyone else has it."""
    session = Session.objects.create(
        tenant=tenant, pool=pool, user=user, desktop=desktop,
        state=SessionState.READY, ready_at=timezone.now(),
    )
    SESSION_MACHINE.created(session)
    desktop_mark_used(desktop=desktop)
    return session

# --- takeover -------------------------------------------------------------------------------
def session_takeover(*, desktop: Desktop, actor) -> ConnectResult:
    """A tenant admin takes a desktop's console over: the holding moves to them.

    The live session ends (reason ``admin``, no logoff policy: the desktop stays as it is),
    the admin gets a session of their own with a fresh ticket that disconnects the previous
    console clients, and the takeover goes into the tenant's audit trail. A floating desktop
    becomes the admin's (its previous user's next Connect gets another desktop); a dedicated
    one stays its owner's, who gets ``desktop_taken_over`` until the admin's session ends.
    """
    with audited(action="desktop.takeover", tenant=desktop.tenant, target=desktop,
                 actor=actor) as audit, transaction.atomic():
        tenant = tenant_lock(tenant=desktop.tenant)
        tenant_require_active(tenant=tenant)
        desktop = (Desktop.objects.select_for_update(of=("self",)).select_related("pool")
                   .get(pk=desktop.pk))
        if desktop.state != DesktopState.RUNNING:
            raise Conflict("Only a running desktop can be taken over.",
                           code="desktop_not_running", details={"state": desktop.state})
        previous = list(live_sessions(desktop=desktop).select_related("user"))
        for session in previous:
            _session_close(session=session, reason=EndReason.ADMIN, logoff=False)
        quota_check_sessions(tenant=tenant, live_sessions=live_sessions(tenant=tenant).count)
        if desktop.pool.kind == PoolKind.FLOATING or desktop.assigned_user_id is None:
            Desktop.objects.filter(pk=desktop.pk).update(assigned_user=actor)
        session = _session_create(tenant=tenant, pool=desktop.pool, user=actor,
                                  desktop=desktop)
        audit.details = {
            "session": str(session.id),
            "ended_sessions": [str(s.id) for s in previous],
            "from_users": sorted({s.user.username for s in previous}),
        }
    logger.info("desktop %s taken over by %s", desktop.name, actor)
    return ConnectResult(session=session,
                         ticket=ticket_issue(session=session, user=actor, takeover=True))

