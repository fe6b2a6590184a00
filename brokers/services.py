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
from django.db import IntegrityError, transaction
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
from vdi.errors import Conflict, ServiceError
from vdi.metrics import TICKET_ISSUE_SECONDS, observe_seconds
from vdi.models import Desktop, Operation, Pool
from vdi.services import (
    desktop_claim_spare,
    desktop_create,
    desktop_mark_used,
    operation_create,
    pool_autoscale_enqueue,
)
from vdi.taskutils import send_on_commit

from .choices import LIVE_SESSION_STATES, SESSION_MACHINE, EndReason, SessionState, TicketKind
from .holding import READY_STATES, live_sessions, pool_access_require, session_holder_require
from .models import ConnectionTicket, Session

logger = logging.getLogger(__name__)

# The database's name for the holder rule's one-live-session-per-desktop constraint.
ONE_LIVE_SESSION = "session_one_live_per_desktop"
# A floating desktop in these states is released at logoff whatever on_logoff says.
BROKEN_DESKTOP_STATES = (DesktopState.ERROR, DesktopState.DELETING, DesktopState.UNKNOWN)
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
    for session in Session.objects.filter(desktop=desktop, state=SessionState.PENDING):
        SESSION_MACHINE.apply(
            session, SessionState.ENDED, end_reason=EndReason.FAILED, ended_at=timezone.now()
        )


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

    Only the desktop's holder gets tickets (``session_holder_require``). The web process
    never calls libvirt: a worker on the ``console`` queue sets the password and records the
    ticket (``ticket_apply``) while this waits up to TICKET_WAIT_S. None means the worker did
    not answer in time.
    """
    from .tasks import ticket_apply_task

    session_holder_require(session=session, user=user)
    protocol = Protocol.VNC if kind == TicketKind.BROWSER else session.pool.protocol
    password = _new_password(protocol)
    token = secrets.token_urlsafe(32) if kind == TicketKind.BROWSER else ""
    expires_at = timezone.now() + timedelta(seconds=session.pool.effective_ticket_ttl_s)
    with observe_seconds(TICKET_ISSUE_SECONDS, protocol=protocol, outcome="error") as labels:
        try:
            result = ticket_apply_task.apply_async(
                kwargs={"session_id": str(session.id), "kind": kind, "protocol": protocol,
                        "password": password, "valid_until": expires_at.isoformat(),
                        "token_hash": token_hash(token) if token else None,
                        "issued_by": user.pk, "takeover": takeover},
                kwargsrepr=(f"{{'session_id': '{session.id}', 'protocol': '{protocol}', "
                            "'password': '***'}"),
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
        if outcome.get("ticket"):
            labels["outcome"] = "issued"
    if outcome.get("refused"):
        # The session ended, or its desktop stopped, while the worker had the ticket in hand.
        raise Conflict(outcome["message"], code=outcome["refused"])
    if outcome.get("error"):
        raise Conflict(f"The console could not be prepared: {outcome['error']}",
                       code="console_unavailable")
    ticket = ConnectionTicket.objects.select_related("desktop__host").get(pk=outcome["ticket"])
    logger.info("ticket %s issued for session %s (%s, applied=%s)", ticket.id, session.id,
                protocol, ticket.password_applied)
    return IssuedTicket(
        ticket=ticket, password=password, token=token,
        notice="" if ticket.password_applied else SIMULATED_NOTICE,
    )


def console_file_ticket_issue(*, session: Session, user) -> IssuedTicket | None:
    """A ticket for a ``.vv`` file. Native clients speak SPICE: a VNC display listens only
    where the console proxies reach it (``Host.vnc_listen_address``), because QEMU cannot
    cut a VNC client when its session ends; a VNC pool's consoles open in the browser."""
    if session.pool.protocol == Protocol.VNC:
        raise Conflict("This pool's consoles open in the browser; a native client needs a "
                       "SPICE pool.", code="browser_console_only")
    return ticket_issue(session=session, user=user)


def console_token_consume(*, token: str) -> ConsoleTarget | None:
    """The console proxy's question: where does this browser token lead? Once only.

    The token must belong to a browser ticket that has not expired, has not been used, and
    whose session still holds the desktop (live, its user still allowed in the pool); using
    it marks it used in the same conditional update, so a replayed token finds nothing. None
    for anything else, without saying which.
    """
    if not token or len(token) > 256:
        return None
    now = timezone.now()
    with scopes_disabled():
        ticket = (ConnectionTicket.objects
                  .select_related("session__pool", "session__desktop", "session__tenant",
                                  "session__user")
                  .filter(token_hash=token_hash(token), kind=TicketKind.BROWSER).first())
        if ticket is None or ticket.expires_at <= now or ticket.port is None:
            return None
        try:
            session_holder_require(session=ticket.session, user=ticket.session.user)
        except ServiceError:
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


def ticket_apply(*, session_id, kind: str, protocol: str, password: str,
                 valid_until: datetime, token_hash: str | None, issued_by,
                 takeover: bool = False) -> dict:
    """Worker side: set the password on the live domain and record the ticket. Never logs
    the password.

    The desktop's row stays locked from the check to the record, and ``console_revoke``
    takes the same lock, so a session that ends meanwhile either finds no ticket of its
    own or has it revoked right after. The first ticket of a session, and every takeover
    ticket, also disconnects SPICE clients still connected with an earlier session's
    password (QEMU keeps VNC clients: the console proxy cuts those).
    """
    with transaction.atomic():
        session = (Session.objects.select_related("pool", "desktop").filter(pk=session_id)
                   .first())
        desktop = session and session.desktop_id and (
            Desktop.objects.select_for_update(of=("self",)).select_related("host")
            .filter(pk=session.desktop_id).first())
        if not desktop or session.state not in READY_STATES:
            return {"refused": "session_ended", "message": "This session has ended."}
        if desktop.state != DesktopState.RUNNING or desktop.host is None:
            return {"refused": "desktop_not_running",
                    "message": "The session's desktop is not running."}
        last = (ConnectionTicket.objects.filter(desktop=desktop).order_by("-created_at")
                .values_list("session_id", flat=True).first())
        disconnect = takeover or (last is not None and last != session.id)
        applied = _console_password_set(desktop=desktop, protocol=protocol, password=password,
                                        valid_until=valid_until, disconnect=disconnect)
        if isinstance(applied, str):
            return {"error": applied}
        host = desktop.host
        ticket = ConnectionTicket.objects.create(
            tenant_id=session.tenant_id, session=session, desktop=desktop, kind=kind,
            protocol=protocol,
            host=host.vnc_listen_address if protocol == Protocol.VNC else host.console_address,
            port=desktop.vnc_port if protocol == Protocol.VNC else desktop.spice_port,
            tls_port=desktop.spice_tls_port if protocol == Protocol.SPICE else None,
            token_hash=token_hash, password_applied=applied, issued_by_id=issued_by,
            expires_at=valid_until,
        )
    return {"ticket": str(ticket.id), "applied": applied}


def _console_password_set(*, desktop: Desktop, protocol: str, password: str,
                          valid_until: datetime, disconnect: bool) -> bool | str:
    """True when set, False on a host that cannot set passwords (simulated), else the
    driver's error."""
    try:
        driver_for(desktop.host).set_console_password(desktop.name, protocol, password,
                                                      valid_until, disconnect=disconnect)
    except ConsoleTicketUnsupported as error:
        logger.warning("desktop %s: console password not set: %s", desktop.name, error)
        return False
    except DriverError as error:
        logger.warning("desktop %s: console password failed: %s", desktop.name, error)
        return str(error)
    return True


def console_revoke(*, desktop_id) -> bool:
    """Worker side, after a session ended: lock the desktop's consoles with a random,
    already expired password on both displays, disconnecting SPICE clients (the console
    proxy cuts browser consoles). Skipped when the desktop's newest ticket belongs to a live
    session: a newer holder's first ticket already disconnected the earlier clients, and its
    own password must stand. True when the consoles were locked."""
    with transaction.atomic():
        desktop = (Desktop.objects.select_for_update(of=("self",)).select_related("host")
                   .filter(pk=desktop_id).first())
        if desktop is None or desktop.host is None or desktop.state != DesktopState.RUNNING:
            return False  # a stopped or vanished domain has no console to cut
        newest = (ConnectionTicket.objects.filter(desktop=desktop).order_by("-created_at")
                  .select_related("session").first())
        if newest is not None and newest.session.state in LIVE_SESSION_STATES:
            return False
        expired = timezone.now() - timedelta(seconds=1)
        locked = [
            _console_password_set(desktop=desktop, protocol=protocol,
                                  password=_new_password(protocol), valid_until=expired,
                                  disconnect=True) is True
            for protocol in (Protocol.SPICE, Protocol.VNC)
        ]
    logger.info("desktop %s: consoles locked after its session ended", desktop.name)
    return all(locked)


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
