"""Filters of the organisations, members and invitations lists (see vdi/api/filters.py for
the conventions)."""

from django_filters import rest_framework as filters

from django.db.models import Q
from django.utils import timezone

from tenants.models import INVITATION_STATES, Invitation, InvitationState, Membership, Tenant
from core.api.filters import ListFilterSet, choice_filter


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



class InvitationStateFilter(filters.MultipleChoiceFilter):
    """``state`` as the API shows it: ``expired`` is a pending invitation past its expiry,
    and ``pending`` only one that can still be accepted."""

    def filter(self, qs, value):
        if not value:
            return qs
        now = timezone.now()
        wanted = Q(state__in=[state for state in value
                              if state not in ("pending", "expired")])
        if "pending" in value:
            wanted |= Q(state=InvitationState.PENDING, expires_at__gt=now)
        if "expired" in value:
            wanted |= Q(state=InvitationState.PENDING, expires_at__lte=now)
        return qs.filter(wanted)


def invitation_state_filter():
    return InvitationStateFilter(
        choices=INVITATION_STATES,
        help_text="Only these states; repeat the parameter for several (pending: those "
                  "that can still be accepted).")


class InvitationFilter(ListFilterSet):
    state = invitation_state_filter()
    role = choice_filter(Invitation, "role", "roles")

    class Meta:
        model = Invitation
        fields = ["state", "role"]


class MyInvitationFilter(ListFilterSet):
    state = invitation_state_filter()
    tenant = filters.CharFilter(field_name="tenant__slug",
                                help_text="The inviting organisation's slug.")

    class Meta:
        model = Invitation
        fields = ["state", "tenant"]
