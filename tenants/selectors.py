from django.db.models import QuerySet

from .models import Membership, Tenant
from .scoping import scopes_disabled


def tenant_list_for_user(*, user) -> QuerySet[Tenant]:
    """Tenants the user belongs to (every tenant for platform staff)."""
    if user.is_staff:
        return Tenant.objects.all()
    with scopes_disabled():
        tenant_ids = list(Membership.objects.filter(user=user).values_list("tenant_id", flat=True))
    return Tenant.objects.filter(id__in=tenant_ids)


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")
