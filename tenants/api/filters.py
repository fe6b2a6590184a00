"""Filters of the organisations and members lists (see vdi/api/filters.py for the
conventions)."""

from django_filters import rest_framework as filters

from tenants.models import Membership, Tenant
from vdi.api.filters import ListFilterSet, choice_filter


class TenantFilter(ListFilterSet):
    status = choice_filter(Tenant, "status", "statuses")

    class Meta:
        model = Tenant
        fields = ["status"]


class MembershipFilter(ListFilterSet):
    role = choice_filter(Membership, "role", "roles")
    username = filters.CharFilter(field_name="user__username", help_text="The member's username.")

    class Meta:
        model = Membership
        fields = ["role", "username"]
