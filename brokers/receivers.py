"""The broker's answers to the lower layers' events (tenants/events.py, vdi/events.py):
when someone's access ends, their sessions end and their consoles are cut."""

from __future__ import annotations

from tenants.choices import ADMIN_ROLES
from tenants.scoping import scopes_disabled
from tenants.services import actor_role
from vdi.choices import OperationKind, PoolKind
from core.errors import Forbidden
from vdi.models import Desktop

from .choices import EndReason
from .holding import desktop_holder_id, live_sessions
from .services import sessions_end, sessions_end_without_access


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
