"""The desktops layer's list filters (the shared kit is core/api/filters.py)."""

from __future__ import annotations

from django_filters import rest_framework as filters

from core.api.filters import ListFilterSet, StrictBooleanFilter, choice_filter, scoped
from hypervisors.models import Host
from tenants.models import Tenant
from vdi.models import Desktop, Image, Operation, Pool


class ImageFilter(ListFilterSet):
    name = filters.CharFilter(help_text="The image's name (exact).")
    tenant = filters.ModelChoiceFilter(queryset=scoped(Tenant),
                                       help_text="The owning organisation's id.")
    boot = choice_filter(Image, "boot", "boot modes")

    class Meta:
        model = Image
        fields = ["name", "tenant", "boot"]


class PoolFilter(ListFilterSet):
    kind = choice_filter(Pool, "kind", "kinds")
    protocol = choice_filter(Pool, "protocol", "protocols")
    enabled = StrictBooleanFilter()
    image = filters.ModelChoiceFilter(queryset=scoped(Image), help_text="The image's id.")

    class Meta:
        model = Pool
        fields = ["kind", "protocol", "enabled", "image"]


class DesktopFilter(ListFilterSet):
    state = choice_filter(Desktop, "state", "states")
    pool = filters.ModelChoiceFilter(queryset=scoped(Pool), help_text="The pool's id.")
    host = filters.ModelChoiceFilter(queryset=scoped(Host), help_text="The host's id.")
    image = filters.ModelChoiceFilter(queryset=scoped(Image), help_text="The image's id.")
    assigned_user = filters.CharFilter(field_name="assigned_user__username",
                                       help_text="The assigned user's username.")

    class Meta:
        model = Desktop
        fields = ["state", "pool", "host", "image", "assigned_user"]


class OperationFilter(ListFilterSet):
    state = choice_filter(Operation, "state", "states")
    kind = choice_filter(Operation, "kind", "kinds")
    desktop = filters.ModelChoiceFilter(queryset=scoped(Desktop), help_text="The desktop's id.")
    pool = filters.ModelChoiceFilter(queryset=scoped(Pool), help_text="The pool's id.")
    actor = filters.CharFilter(field_name="actor__username",
                               help_text="The username of who asked for it.")

    class Meta:
        model = Operation
        fields = ["state", "kind", "desktop", "pool", "actor"]
