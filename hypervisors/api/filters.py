"""Filters of the hosts list (see vdi/api/filters.py for the conventions)."""

from hypervisors.models import Host
from core.api.filters import ListFilterSet, StrictBooleanFilter, choice_filter


class HostFilter(ListFilterSet):
    state = choice_filter(Host, "state", "states")
    enabled = StrictBooleanFilter()
    virt_type = choice_filter(Host, "virt_type", "virtualisation types")

    class Meta:
        model = Host
        fields = ["state", "enabled", "virt_type"]
