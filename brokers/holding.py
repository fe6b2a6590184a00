"""The holder rule, written once.

A desktop has at most one **holder**: the user of its one live session, or between sessions
its assigned user. Everything that reaches a console asks here first:

- a desktop has at most one live session (a partial unique constraint on ``Session``
  enforces it in the database), and a desktop with a live session is always assigned, so a
  claim (which only takes unassigned desktops) never takes a held desktop;
- console tickets, ``.vv`` files and browser tokens go only to the user of a live session,
  while that user may still use the pool (member of an active organisation, entitled to an
  enabled pool); ``session_holder_require`` is the check;
- a takeover moves holding to the admin: a floating desktop becomes theirs (its previous
  user's next Connect gets another desktop), a dedicated one stays its owner's, who gets a
  409 ``desktop_taken_over`` until the admin's session ends;
- a floating desktop someone used (``needs_reset``) reaches nobody else before a reset to
  its image; ``keep`` keeps it for the same user only.
"""

from __future__ import annotations

from django.db.models import Q

from tenants.choices import ADMIN_ROLES
from tenants.models import Tenant
from tenants.scoping import scopes_disabled
from tenants.services import actor_role, tenant_require_active
from vdi.choices import DesktopState
from core.errors import Conflict, Forbidden
from vdi.models import Desktop, Pool, PoolEntitlement

from .choices import LIVE_SESSION_STATES, SessionState
from .models import Session

READY_STATES = (SessionState.READY, SessionState.CONNECTED, SessionState.DISCONNECTED)


def desktop_holder_id(*, desktop: Desktop):
    """The holder's user id: the user of the desktop's live session, else its assigned user
    (None: nobody holds it)."""
    live = (Session.objects.filter(desktop=desktop, state__in=LIVE_SESSION_STATES)
            .values_list("user_id", flat=True).first())
    return live if live is not None else desktop.assigned_user_id


def pool_access_require(*, pool: Pool, user, tenant: Tenant | None = None) -> None:
    """``user`` may open consoles in ``pool`` right now: the organisation is active, the
    pool enabled and not being deleted, and the user entitled to it (409/403 otherwise)."""
    tenant = tenant or pool.tenant
    tenant_require_active(tenant=tenant)
    if pool.is_deleting:
        raise Conflict("This pool is being deleted.", code="pool_deleting")
    if not pool.enabled:
        raise Conflict("This pool is disabled.", code="pool_disabled")
    if not pool_user_entitled(pool=pool, user=user, tenant=tenant):
        raise Forbidden("You may not use this pool.", code="not_entitled")


def session_holder_require(*, session: Session, user) -> None:
    """Refuse a console credential (ticket, ``.vv``, browser token) unless ``user`` holds the
    session's desktop through this session and may still use its pool."""
    if session.user_id != user.pk:
        raise Forbidden("This is another user's session; an administrator can take the "
                        "desktop over instead.", code="not_desktop_holder")
    if session.state == SessionState.ENDED:
        raise Conflict("This session has ended; connect again.", code="session_ended",
                       details={"end_reason": session.end_reason})
    if session.state not in READY_STATES:
        raise Conflict(f"The session is {session.state}, not ready.", code="session_not_ready",
                       details={"state": session.state})
    pool_access_require(pool=session.pool, user=user, tenant=session.tenant)
    desktop = session.desktop
    if desktop is None or desktop.state != DesktopState.RUNNING:
        raise Conflict("The session's desktop is not running.", code="desktop_not_running")


def pool_user_entitled(*, pool: Pool, user, tenant: Tenant | None = None) -> bool:
    """The pool is open to ``user``: platform staff and the organisation's admins use every
    pool, members the pools open to all members or listing them; anyone else none."""
    role = actor_role(tenant=tenant or pool.tenant, actor=user)
    if role is None:
        return False
    with scopes_disabled():
        return (role in ADMIN_ROLES or pool.entitle_all_members
                or PoolEntitlement.objects.filter(pool=pool, user=user).exists())


def live_sessions(**filters):
    """Live sessions matching ``filters`` (e.g. ``desktop=``, ``pool=``, ``user=``)."""
    return Session.objects.filter(Q(**filters), state__in=LIVE_SESSION_STATES)
