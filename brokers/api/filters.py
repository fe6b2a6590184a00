"""Filters of the sessions list (see vdi/api/filters.py for the conventions)."""

from django_filters import rest_framework as filters

from brokers.models import Session
from core.api.filters import ListFilterSet, choice_filter, scoped
from vdi.models import Desktop, Pool


class SessionFilter(ListFilterSet):
    state = choice_filter(Session, "state", "states")
    pool = filters.ModelChoiceFilter(queryset=scoped(Pool), help_text="The pool's id.")
    desktop = filters.ModelChoiceFilter(queryset=scoped(Desktop), help_text="The desktop's id.")
    user = filters.CharFilter(field_name="user__username", help_text="The user's username.")

    class Meta:
        model = Session
        fields = ["state", "pool", "desktop", "user"]
