"""Sessions after Connect: they follow their desktops and console clients, run out at their
pool's limits, and end, a floating desktop then getting its pool's ``on_logoff``."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from tenants.audit import audited
from vdi.choices import (
    UNFINISHED_OPERATION_STATES,
    DesktopState,
    OnLogoff,
    OperationKind,
    PoolKind,
)
from core.errors import ServiceError
from vdi.models import Desktop, Operation, Pool
from vdi.services import desktop_mark_used, operation_create
from core.taskutils import send_on_commit

from ..choices import LIVE_SESSION_STATES, SESSION_MACHINE, EndReason, SessionState
from ..holding import READY_STATES, live_sessions, pool_access_require
from ..models import Session

# The log keeps its name from before the package (operators' filters and the console proxy's
# token mask name it).
logger = logging.getLogger("brokers.services")

# A floating desktop in these states is released at logoff whatever on_logoff says.
BROKEN_DESKTOP_STATES = (DesktopState.ERROR, DesktopState.DELETING, DesktopState.UNKNOWN)


# --- desktops and their consoles ------------------------------------------------------------
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
        send_on_commit("brokers.console_revoke", str(session.desktop_id))
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
