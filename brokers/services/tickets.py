"""Console tickets: a fresh password a worker sets on the live domain with an expiry, returned
once to the desktop's holder and never stored; browser tickets add a single-use token for the
console proxy, stored hashed. When a session ends, ``console_revoke`` locks the consoles.
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
from tenants.audit import audit_record, audited
from tenants.choices import AuditResult
from tenants.scoping import scopes_disabled
from vdi.choices import DesktopState, Protocol
from core.errors import Conflict, ServiceError
from core.metrics import TICKET_ISSUE_SECONDS, observe_seconds
from core.taskutils import task_named
from vdi.models import Desktop

from ..choices import LIVE_SESSION_STATES, TicketKind
from ..holding import READY_STATES, session_holder_require
from ..models import ConnectionTicket, Session

# The log keeps its name from before the package (operators' filters and the console proxy's
# token mask name it).
logger = logging.getLogger("brokers.tickets")

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
    session_holder_require(session=session, user=user)
    protocol = Protocol.VNC if kind == TicketKind.BROWSER else session.pool.protocol
    password = _new_password(protocol)
    token = secrets.token_urlsafe(32) if kind == TicketKind.BROWSER else ""
    expires_at = timezone.now() + timedelta(seconds=session.pool.effective_ticket_ttl_s)
    with observe_seconds(TICKET_ISSUE_SECONDS, protocol=protocol, outcome="error") as labels:
        try:
            result = task_named("brokers.ticket_apply").apply_async(
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
