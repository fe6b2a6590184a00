"""The broker: sessions, from Connect to logoff.

Connect hands a user a desktop: their live session's, else a ready spare claimed atomically,
else a stopped spare started or a new desktop provisioned (answered as pending). A ready
session comes with a console ticket (``brokers/tickets.py``). Every step obeys the holder
rule (``brokers/holding.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

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
    OnLogoff,
    OperationKind,
    PoolKind,
)
from core.errors import Conflict, ServiceError
from vdi.models import Desktop, Operation, Pool
from vdi.services import (
    desktop_claim_spare,
    desktop_create,
    desktop_mark_used,
    operation_create,
    pool_autoscale_enqueue,
)
from core.taskutils import send_on_commit

from .choices import LIVE_SESSION_STATES, SESSION_MACHINE, EndReason, SessionState
from .holding import READY_STATES, live_sessions, pool_access_require
from .models import Session
from .tickets import IssuedTicket, ticket_issue

logger = logging.getLogger(__name__)

# The database's name for the holder rule's one-live-session-per-desktop constraint.
ONE_LIVE_SESSION = "session_one_live_per_desktop"
# A floating desktop in these states is released at logoff whatever on_logoff says.
BROKEN_DESKTOP_STATES = (DesktopState.ERROR, DesktopState.DELETING, DesktopState.UNKNOWN)
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
                live = Session.objects.filter(tenant=tenant,
                                              state__in=LIVE_SESSION_STATES).count()
                quota_check_sessions(tenant=tenant, live_sessions=live)
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
    held = Desktop.objects.filter(pool=pool, assigned_user=user).exclude(
        state=DesktopState.DELETING)
    desktop = held.exclude(state=DesktopState.ERROR).order_by("created_at").first()
    if desktop is None and held.count() >= pool.max_per_user:
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


def sessions_ready_for_desktop(*, desktop: Desktop) -> None:
    """The desktop is running: sessions waiting for it become ready (worker side)."""
    for session in Session.objects.filter(desktop=desktop, state=SessionState.PENDING):
        SESSION_MACHINE.apply(session, SessionState.READY, ready_at=timezone.now())
        desktop_mark_used(desktop=desktop)


def sessions_fail_for_desktop(*, desktop: Desktop) -> None:
    """The desktop could not be prepared: the sessions waiting for it end (``failed``), and
    a floating one is released from its user, whose next Connect gets a working desktop."""
    for session in Session.objects.filter(desktop=desktop, state=SessionState.PENDING):
        with transaction.atomic():
            session = Session.objects.select_for_update().get(pk=session.pk)
            if session.state == SessionState.PENDING:
                _session_close(session=session, reason=EndReason.FAILED, logoff=True)


def sessions_end_for_desktop(*, desktop: Desktop) -> None:
    """The desktop was lost (stopped or deleted outside the portal, or its host stopped
    answering): its sessions end."""
    sessions_end(sessions=live_sessions(desktop=desktop), reason=EndReason.DESKTOP_LOST)


def sessions_end_without_access(*, sessions) -> int:
    """Access ends when access ends: end those of the live ``sessions`` whose user may no
    longer use their pool (organisation suspended, pool disabled or being deleted, user no
    longer entitled or no longer a member), as an administrator would."""
    lost = []
    for session in sessions.filter(state__in=LIVE_SESSION_STATES).select_related(
            "pool", "tenant", "user"):
        try:
            pool_access_require(pool=session.pool, user=session.user, tenant=session.tenant)
        except ServiceError:
            lost.append(session)
    return sessions_end(sessions=lost)


# Graphics event phases: "initialize" follows a successful login, "disconnect" its end.
_CONSOLE_PHASES = {
    "initialize": (SessionState.CONNECTED, (SessionState.READY, SessionState.DISCONNECTED)),
    "disconnect": (SessionState.DISCONNECTED, (SessionState.CONNECTED,)),
}


def session_console_event(*, desktop: Desktop, phase: str, client_address: str = "") -> None:
    """A console client logged in to or left the desktop (from the host's graphics events)."""
    if phase not in _CONSOLE_PHASES:
        return  # "connect" comes before authentication: not a login yet
    target, sources = _CONSOLE_PHASES[phase]
    session = (
        Session.objects.filter(desktop=desktop, state__in=sources).order_by("-created_at").first()
    )
    if session is None:
        logger.info("desktop %s: console %s from %s with no session waiting for it",
                    desktop.name, phase, client_address or "?")
        return
    fields = {"client_address": client_address} if client_address else {}
    if target == SessionState.CONNECTED and session.connected_at is None:
        fields["connected_at"] = timezone.now()
    if SESSION_MACHINE.move(Session, session.pk, session.state, target, **fields):
        logger.info("session %s %s (client %s)", session.id, target, client_address or "?")


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
        quota_check_sessions(tenant=tenant, live_sessions=live_sessions(tenant=tenant).count())
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


# --- time limits ----------------------------------------------------------------------------
def sessions_expire() -> int:
    """End sessions past their pool's limits (the beat runs this every 30 s):
    ``max_session_s`` since the session became ready, and ``idle_timeout_s`` without a
    console connected (ready but never connected, or disconnected). Ending applies the
    pool's ``on_logoff``."""
    now = timezone.now()
    ended = 0
    live = (Session.objects.filter(state__in=READY_STATES)
            .select_related("pool").exclude(ready_at__isnull=True))
    for session in live:
        pool = session.pool
        if pool.max_session_s and session.ready_at + timedelta(seconds=pool.max_session_s) <= now:
            reason = EndReason.MAX_DURATION
        elif (pool.idle_timeout_s and session.state != SessionState.CONNECTED
              and session.state_changed_at + timedelta(seconds=pool.idle_timeout_s) <= now):
            reason = EndReason.IDLE
        else:
            continue
        session_end(session=session, actor=None, reason=reason)
        logger.info("session %s ended: %s", session.id, reason)
        ended += 1
    return ended


# --- end ------------------------------------------------------------------------------------
def session_end(*, session: Session, actor, reason: str | None = None) -> Session:
    """End the session: its consoles are cut, and a floating desktop gets the pool's
    on_logoff.

    Without a ``reason``: ``user`` when its own user ends it, ``admin`` when someone else
    (a tenant admin) does."""
    with audited(action="session.end", tenant=session.tenant, target=session,
                 actor=actor) as audit, transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.state == SessionState.ENDED:
            audit.skip()
            return session
        if reason is None:
            reason = EndReason.USER if actor is None or actor.pk == session.user_id \
                else EndReason.ADMIN
        audit.details = {"reason": reason, "desktop": session.desktop_id}
        _session_close(session=session, reason=reason, logoff=True)
    return session


def sessions_end(*, sessions, reason: str = EndReason.ADMIN) -> int:
    """End each of ``sessions`` (a queryset or list) as an administrator would."""
    ended = 0
    for session in list(sessions):
        session_end(session=session, actor=None, reason=reason)
        ended += 1
    return ended


def _session_close(*, session: Session, reason: str, logoff: bool) -> None:
    """Inside the caller's transaction, with the session locked: end it, cut its consoles
    once that commits, and apply on_logoff if asked. The ending session was the desktop's
    one live session, so it was its holder's."""
    had_tickets = session.state != SessionState.PENDING and session.tickets.exists()
    SESSION_MACHINE.apply(session, SessionState.ENDED, end_reason=reason,
                          ended_at=timezone.now())
    if session.desktop_id is None:
        return
    if had_tickets:
        from .tasks import console_revoke_task

        send_on_commit(console_revoke_task, str(session.desktop_id))
    if not logoff:
        return
    desktop = Desktop.objects.select_related("pool").get(pk=session.desktop_id)
    if desktop.pool.kind == PoolKind.FLOATING and not desktop.pool.is_deleting \
            and desktop.assigned_user_id == session.user_id:
        _apply_on_logoff(desktop=desktop, pool=desktop.pool)


def _apply_on_logoff(*, desktop: Desktop, pool: Pool) -> None:
    """A floating desktop after its holder's session: ``keep`` keeps it for the same user;
    ``recycle`` and ``shutdown`` release it and reset it to the image (running, or stopped
    for ``shutdown``). A desktop an operation is busy with, or broken, or lost with its host
    is released as it is: it still ``needs_reset``, so nobody may claim it before a reset
    (the autoscaler resets released used desktops once they settle)."""
    if pool.on_logoff == OnLogoff.KEEP and desktop.state not in BROKEN_DESKTOP_STATES:
        return
    Desktop.objects.filter(pk=desktop.pk).update(assigned_user=None)
    busy = Operation.objects.filter(desktop=desktop,
                                    state__in=UNFINISHED_OPERATION_STATES).exists()
    if busy or desktop.state not in (DesktopState.RUNNING, DesktopState.STOPPED):
        return
    start = pool.on_logoff == OnLogoff.RECYCLE and desktop.state == DesktopState.RUNNING
    operation_create(desktop=desktop, kind=OperationKind.RESET, actor=None,
                     params={"start": start})
