from django.db.models import QuerySet

from .models import Session


def session_list_for_user(*, user, is_admin: bool) -> QuerySet[Session]:
    sessions = Session.objects.select_related("pool", "desktop", "user", "operation")
    return sessions if is_admin else sessions.filter(user=user)
