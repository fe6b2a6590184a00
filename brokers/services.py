"""The broker: sessions and console tickets.

Connect hands a user a desktop: their live session's, else a ready spare claimed atomically,
else a stopped spare started or a new desktop provisioned (answered as pending). A ticket is a
fresh console password that a worker sets on the live domain with an expiry; the password is
returned once to the user and never stored.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from hypervisors.drivers import ConsoleTicketUnsupported, DriverError, driver_for
from hypervisors.services import host_room
from tenants.audit import audit_record, audited
from tenants.choices import AuditResult
from tenants.scoping import scopes_disabled
from tenants.services import quota_check_desktops, quota_check_sessions
from tenants.services import tenant_lock
from tenants.services import tenant_require_active
from vdi.choices import (
    UNFINISHED_OPERATION_STATES,
    DesktopState,
    OnLogoff,
    OperationKind,
    PoolKind,
    Protocol,
)
from vdi.errors import Conflict, Forbidden
from vdi.metrics import TICKET_ISSUE_SECONDS, observe_seconds
from vdi.models import Desktop, Operation, Pool
from vdi.services import pool_autoscale_enqueue, desktop_claim_spare, desktop_create
from vdi.services import operation_create

from .choices import LIVE_SESSION_STATES, SESSION_MACHINE, EndReason, SessionState, TicketKind
from .models import ConnectionTicket, Session

logger = logging.getLogger(__name__)

READY_STATES = (SessionState.READY, SessionState.CONNECTED, SessionState.DISCONNECTED)
SIMULATED_NOTICE = (
    "This desktop runs on a simulated host (libvirt test driver): no console password was "
    "set and no console will answer."
)


@dataclass
class IssuedTicket:
    ticket: ConnectionTicket
    password: str
    notice: str = ""
    # Browser tickets only: the single-use token the console proxy takes (stored hashed).
    token: str = ""


@dataclass(frozen=True)
class ConsoleTarget:
    """Where the console proxy connects a browser: a desktop's VNC display."""

    ticket_id: str
    session_id: str
    host: str
    port: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
    tenant_require_active(tenant=pool.tenant)
    if pool.is_deleting:
        raise Conflict("This pool is being deleted.", code="pool_deleting")
    if not pool.enabled:
        raise Conflict("This pool is disabled.", code="pool_disabled")
    with transaction.atomic():
        tenant = tenant_lock(tenant=pool.tenant)
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
            live = Session.objects.filter(tenant=tenant, state__in=LIVE_SESSION_STATES).count()
            quota_check_sessions(tenant=tenant, live_sessions=live)
            session = _session_open(tenant=tenant, pool=pool, user=user)
            pool_autoscale_enqueue(pool)
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
        session = Session.objects.create(
            tenant=tenant, pool=pool, user=user, desktop=desktop,
            state=SessionState.READY, ready_at=timezone.now(),
        )
        SESSION_MACHINE.created(session)
        return session
    operation = (
        Operation.objects.filter(desktop=desktop, state__in=UNFINISHED_OPERATION_STATES).first()
    )
    if operation is None and desktop.state == DesktopState.STOPPED:
        operation = operation_create(desktop=desktop, kind=OperationKind.START, actor=user)
    return Session.objects.create(
        tenant=tenant, pool=pool, user=user, desktop=desktop, operation=operation
    )


def sessions_ready_for_desktop(*, desktop: Desktop) -> None:
    """The desktop is running: sessions waiting for it become ready (worker side)."""
    for session in Session.objects.filter(desktop=desktop, state=SessionState.PENDING):
        SESSION_MACHINE.apply(session, SessionState.READY, ready_at=timezone.now())


def sessions_fail_for_desktop(*, desktop: Desktop) -> None:
    for session in Session.objects.filter(desktop=desktop, state=SessionState.PENDING):
        SESSION_MACHINE.apply(
            session, SessionState.ENDED, end_reason=EndReason.FAILED, ended_at=timezone.now()
        )


def sessions_end_for_pool(*, pool: Pool) -> None:
    """The pool is being deleted: its live sessions end (as by an administrator)."""
    for session in Session.objects.filter(pool=pool, state__in=LIVE_SESSION_STATES):
        session_end(session=session, actor=None, reason=EndReason.ADMIN)


def sessions_end_for_desktop(*, desktop: Desktop) -> None:
    """The desktop was lost (stopped or deleted outside the portal, or its host stopped
    answering): its sessions end."""
    for session in Session.objects.filter(desktop=desktop, state__in=LIVE_SESSION_STATES):
        session_end(session=session, actor=None, reason=EndReason.DESKTOP_LOST)


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


# --- tickets --------------------------------------------------------------------------------
def _new_password(protocol: str) -> str:
    # QEMU caps VNC passwords at 8 characters: VNC relies on the short expiry.
    return secrets.token_urlsafe(32)[:8] if protocol == Protocol.VNC else secrets.token_urlsafe(32)


def ticket_issue(*, session: Session, user, kind: str = TicketKind.NATIVE,
                 takeover: bool = False) -> IssuedTicket | None:
    """``_ticket_issue``, audited as ``session.ticket``: the kind, protocol and ticket, never
    the password or token; no worker answering in time is a failure (the client retries)."""
    with audited(action="session.ticket", tenant=session.tenant, target=session, actor=user,
                 details={"kind": kind, "takeover": takeover}) as audit:
        issued = _ticket_issue(session=session, user=user, kind=kind, takeover=takeover)
        if issued is None:
            audit.result = AuditResult.FAILED
            audit.details["error"] = {"code": "timeout",
                                      "message": "no worker answered in time"}
        else:
            audit.details.update(ticket=str(issued.ticket.id), protocol=issued.ticket.protocol,
                                 password_applied=issued.ticket.password_applied)
    return issued


def _ticket_issue(*, session: Session, user, kind: str, takeover: bool) -> IssuedTicket | None:
    """Set a fresh console password on the session's desktop and return it once.

    Only the session's own user gets tickets: the desktop has one console owner (an admin
    who needs it uses ``session_takeover``). The new password replaces the previous one at
    once; on a takeover, SPICE clients still connected are disconnected too (QEMU keeps VNC
    clients connected). The web process never calls libvirt: a worker sets the password on
    the ``console`` queue while this waits up to TICKET_WAIT_S. None means the worker did
    not answer in time.
    """
    from .tasks import ticket_apply_task

    if session.user_id != user.pk:
        raise Forbidden("This is another user's session; an administrator can take the "
                        "desktop over instead.", code="not_session_owner")
    if session.state not in READY_STATES:
        raise Conflict(f"The session is {session.state}, not ready.", code="session_not_ready",
                       details={"state": session.state})
    desktop = session.desktop
    if desktop is None or desktop.state != DesktopState.RUNNING:
        raise Conflict("The session's desktop is not running.", code="desktop_not_running")
    protocol = Protocol.VNC if kind == TicketKind.BROWSER else session.pool.protocol
    password = _new_password(protocol)
    expires_at = timezone.now() + timedelta(seconds=session.pool.effective_ticket_ttl_s)
    with observe_seconds(TICKET_ISSUE_SECONDS, protocol=protocol, outcome="error") as labels:
        try:
            result = ticket_apply_task.apply_async(
                kwargs={"desktop_id": str(desktop.id), "protocol": protocol,
                        "password": password, "valid_until": expires_at.isoformat(),
                        "disconnect": takeover},
                kwargsrepr=(f"{{'desktop_id': '{desktop.id}', 'protocol': '{protocol}', "
                            "'password': '***'}"),
                queue="console",
            )
            outcome = result.get(timeout=settings.VDI["TICKET_WAIT_S"], propagate=True)
        except CeleryTimeout:
            labels["outcome"] = "pending"
            logger.warning("ticket for session %s: no worker answered in time", session.id)
            return None
        except (OperationalError, RuntimeError) as error:
            # The broker or the result store (Celery's Redis result consumer gives up with a
            # RuntimeError) is unreachable: the client asks again, as after a time-out.
            labels["outcome"] = "pending"
            logger.warning("ticket for session %s: the broker is unreachable: %s", session.id,
                           error)
            return None
        if not outcome.get("error"):
            labels["outcome"] = "issued"
    if outcome.get("error"):
        raise Conflict(f"The console could not be prepared: {outcome['error']}",
                       code="console_unavailable")
    token = secrets.token_urlsafe(32) if kind == TicketKind.BROWSER else ""
    ticket = ConnectionTicket.objects.create(
        tenant=session.tenant, session=session, desktop=desktop, kind=kind, protocol=protocol,
        host=desktop.host.console_address,
        port=desktop.vnc_port if protocol == Protocol.VNC else desktop.spice_port,
        tls_port=desktop.spice_tls_port if protocol == Protocol.SPICE else None,
        token_hash=token_hash(token) if token else None,
        password_applied=outcome["applied"], issued_by=user, expires_at=expires_at,
    )
    logger.info("ticket %s issued for session %s (%s, applied=%s)", ticket.id, session.id,
                protocol, ticket.password_applied)
    return IssuedTicket(
        ticket=ticket, password=password, token=token,
        notice="" if ticket.password_applied else SIMULATED_NOTICE,
    )


def console_token_consume(*, token: str) -> ConsoleTarget | None:
    """The console proxy's question: where does this browser token lead? Once only.

    The token must belong to a browser ticket that has not expired, has not been used, and
    whose session is still live; using it marks it used in the same conditional update, so
    a replayed token finds nothing. None for anything else, without saying which.
    """
    if not token or len(token) > 256:
        return None
    now = timezone.now()
    with scopes_disabled():
        ticket = (ConnectionTicket.objects.select_related("session")
                  .filter(token_hash=token_hash(token), kind=TicketKind.BROWSER).first())
        if (ticket is None or ticket.expires_at <= now or ticket.port is None
                or ticket.session.state not in READY_STATES):
            return None
        used = ConnectionTicket.objects.filter(pk=ticket.pk, used_at__isnull=True).update(
            used_at=now)
    audit_record(tenant=ticket.tenant, actor=None, action="session.console",
                 target=ticket.session, result=AuditResult.OK if used else AuditResult.DENIED,
                 details={"ticket": str(ticket.id), "replayed": not used})
    if not used:
        logger.warning("console token of ticket %s replayed: refused", ticket.id)
        return None
    return ConsoleTarget(ticket_id=str(ticket.id), session_id=str(ticket.session_id),
                         host=ticket.host, port=ticket.port)


def ticket_apply(*, desktop: Desktop, protocol: str, password: str, valid_until: datetime,
                 disconnect: bool = False) -> dict:
    """Worker side: set the password on the live domain. Never logs the password."""
    try:
        driver_for(desktop.host).set_console_password(desktop.name, protocol, password,
                                                      valid_until, disconnect=disconnect)
    except ConsoleTicketUnsupported as error:
        logger.warning("desktop %s: console password not set: %s", desktop.name, error)
        return {"applied": False, "error": None}
    except DriverError as error:
        logger.warning("desktop %s: console password failed: %s", desktop.name, error)
        return {"applied": False, "error": str(error)}
    return {"applied": True, "error": None}


# --- takeover -------------------------------------------------------------------------------
def session_takeover(*, desktop: Desktop, actor) -> ConnectResult:
    """A tenant admin takes a desktop's console over: the owner's live session ends (reason
    ``admin``, no logoff policy applied), the admin gets a session of their own with a fresh
    ticket, and the takeover goes into the tenant's audit trail."""
    with audited(action="desktop.takeover", tenant=desktop.tenant, target=desktop,
                 actor=actor) as audit, transaction.atomic():
        desktop = Desktop.objects.select_for_update().get(pk=desktop.pk)
        if desktop.state != DesktopState.RUNNING:
            raise Conflict("Only a running desktop can be taken over.",
                           code="desktop_not_running", details={"state": desktop.state})
        now = timezone.now()
        previous = list(Session.objects.filter(desktop=desktop, state__in=LIVE_SESSION_STATES)
                        .select_related("user"))
        for session in previous:
            SESSION_MACHINE.apply(session, SessionState.ENDED, end_reason=EndReason.ADMIN,
                                  ended_at=now)
        session = Session.objects.create(
            tenant=desktop.tenant, pool=desktop.pool, user=actor, desktop=desktop,
            state=SessionState.READY, ready_at=now,
        )
        SESSION_MACHINE.created(session)
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
    """End the session and apply the pool's on_logoff to a floating desktop.

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
        SESSION_MACHINE.apply(session, SessionState.ENDED, end_reason=reason,
                              ended_at=timezone.now())
        desktop = session.desktop
        pool = Pool.objects.get(pk=session.pool_id)
        if desktop is not None and pool.kind == PoolKind.FLOATING and not pool.is_deleting:
            _apply_on_logoff(desktop=desktop, pool=pool)
    return session


def _apply_on_logoff(*, desktop: Desktop, pool: Pool) -> None:
    desktop.refresh_from_db(fields=["state"])
    if desktop.state in (DesktopState.ERROR, DesktopState.DELETING, DesktopState.UNKNOWN):
        # A broken floating desktop, or one lost with its host, is nobody's: the user gets a
        # working one next time (one that comes back is reset first).
        Desktop.objects.filter(pk=desktop.pk).update(assigned_user=None)
        return
    busy = Operation.objects.filter(desktop=desktop,
                                    state__in=UNFINISHED_OPERATION_STATES).exists()
    if pool.on_logoff == OnLogoff.KEEP or busy:
        return
    if pool.on_logoff == OnLogoff.RECYCLE:
        Desktop.objects.filter(pk=desktop.pk).update(assigned_user=None)
        if desktop.state in (DesktopState.RUNNING, DesktopState.STOPPED):
            operation_create(desktop=desktop, kind=OperationKind.RESET, actor=None,
                             params={"start": desktop.state == DesktopState.RUNNING})
    elif pool.on_logoff == OnLogoff.SHUTDOWN and desktop.state == DesktopState.RUNNING:
        Desktop.objects.filter(pk=desktop.pk).update(assigned_user=None)
        operation_create(desktop=desktop, kind=OperationKind.SHUTDOWN, actor=None)
