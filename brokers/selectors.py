from django.db.models import QuerySet

from .choices import LIVE_SESSION_STATES, EndReason
from .models import Session


def session_list_for_user(*, user, is_admin: bool) -> QuerySet[Session]:
    sessions = Session.objects.select_related("pool", "desktop", "user", "operation")
    return sessions if is_admin else sessions.filter(user=user)


def session_end_reason(*, session_id) -> str | None:
    """None while the session is live; once it is over, why (its end reason's label, or ""
    when that is unknown or the row is gone). One primary-key lookup: the console proxy asks
    it every few seconds for every open browser console."""
    row = (Session.objects.filter(pk=session_id).order_by()
           .values_list("state", "end_reason").first())
    if row is None:
        return ""
    state, reason = row
    if state in LIVE_SESSION_STATES:
        return None
    return EndReason(reason).label if reason in EndReason.values else ""
