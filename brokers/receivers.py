"""The broker's answers to the lower layers' events (tenants/events.py,
hypervisors/events.py, vdi/events.py): when someone's access ends, their sessions end and
their consoles are cut; sessions follow their desktops and their console clients."""

from __future__ import annotations

from tenants.choices import ADMIN_ROLES
from tenants.scoping import scopes_disabled
from tenants.services import actor_role
from vdi.choices import OperationKind, PoolKind
from core.errors import Forbidden
from hypervisors.drivers import EventKind
from vdi.models import Desktop

from .choices import LIVE_SESSION_STATES, EndReason
from .models import Session
from .holding import desktop_holder_id, live_sessions
from .services import (
    session_console_event,
    sessions_end,
    sessions_end_for_desktop,
    sessions_end_without_access,
    sessions_fail_for_desktop,
    sessions_ready_for_desktop,
)


def on_membership_removed(sender, *, tenant, user, **kwargs) -> None:
    """A person left the organisation: their sessions end, and floating desktops kept for
    them are released (still to be reset before anyone else has them). Dedicated desktops
    stay assigned, with their data, until an admin deletes or resets them."""
    with scopes_disabled():
        sessions_end(sessions=live_sessions(tenant=tenant, user=user))
        Desktop.objects.filter(tenant=tenant, assigned_user=user,
                               pool__kind=PoolKind.FLOATING).update(assigned_user=None)


def on_tenant_suspended(sender, *, tenant, **kwargs) -> None:
    with scopes_disabled():
        sessions_end(sessions=live_sessions(tenant=tenant))


def on_pool_access_changed(sender, *, pool, **kwargs) -> None:
    with scopes_disabled():
        sessions_end_without_access(sessions=live_sessions(pool=pool))


# Power operations that take the desktop away from its session.
SESSION_ENDING_OPERATIONS = frozenset({OperationKind.SHUTDOWN, OperationKind.POWEROFF,
                                       OperationKind.RESET, OperationKind.DELETE})


def on_desktop_power_requested(sender, *, desktop, kind, actor, **kwargs) -> None:
    """Only the desktop's holder (or an admin of its organisation) may power it; a reset,
    shutdown, power-off or delete ends the sessions on it first (their on_logoff sees the
    operation and leaves the desktop to it)."""
    if actor is not None and actor_role(tenant=desktop.tenant, actor=actor) not in ADMIN_ROLES:
        if desktop_holder_id(desktop=desktop) != actor.pk:
            raise Forbidden("Someone else holds this desktop right now.",
                            code="not_desktop_holder")
    if kind in SESSION_ENDING_OPERATIONS:
        with scopes_disabled():
            reason = EndReason.USER if actor is not None and not live_sessions(
                desktop=desktop).exclude(user=actor).exists() else EndReason.ADMIN
            sessions_end(sessions=live_sessions(desktop=desktop), reason=reason)


def on_desktop_running(sender, *, desktop, **kwargs) -> None:
    sessions_ready_for_desktop(desktop=desktop)


def on_desktop_lost(sender, *, desktop, **kwargs) -> None:
    sessions_end_for_desktop(desktop=desktop)


def on_desktop_failed(sender, *, desktop, **kwargs) -> None:
    sessions_fail_for_desktop(desktop=desktop)


def on_domain_event(sender, *, host, event, **kwargs) -> None:
    """A console client logged in to or left a desktop (the host's graphics events)."""
    if event.kind != EventKind.GRAPHICS:
        return
    desktop = Desktop.objects.filter(host=host, name=event.domain).select_related(
        "host", "pool").first()
    if desktop is not None:
        session_console_event(desktop=desktop, phase=event.detail,
                              client_address=event.client_address)


def quota_usage(sender, *, tenant, quotas=None, **kwargs) -> dict:
    """Live sessions count against the organisation's max_sessions."""
    if quotas is not None and "max_sessions" not in quotas:
        return {}
    return {"max_sessions": Session.objects.filter(
        tenant=tenant, state__in=LIVE_SESSION_STATES).count()}
