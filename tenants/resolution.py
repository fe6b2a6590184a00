"""The one place where a tenant slug from a URL becomes an active, checked tenant scope."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import Http404

from .choices import ADMIN_ROLES
from .models import Membership, Tenant
from .scoping import activate, scopes_disabled


@dataclass(frozen=True)
class TenantAccess:
    tenant: Tenant
    role: str | None  # None: platform staff without a membership

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES or self.role is None


def resolve_tenant(*, user, slug: str) -> TenantAccess:
    """Return the tenant and the user's role in it, or raise 404.

    Non-members get 404 whether or not the tenant exists, so slugs can't be probed.
    Platform staff may act in any tenant with admin rights.
    """
    if not user.is_authenticated:
        raise Http404("No such tenant.")
    with scopes_disabled():
        tenant = Tenant.objects.filter(slug=slug).first()
        role = (
            Membership.objects.filter(tenant=tenant, user=user).values_list("role", flat=True).first()
            if tenant
            else None
        )
    if tenant is None or (role is None and not user.is_staff):
        raise Http404("No such tenant.")
    return TenantAccess(tenant=tenant, role=role)


def activate_tenant(*, user, slug: str) -> TenantAccess:
    """Resolve ``slug`` and make it the current scope until the request ends.

    The request middleware (``TenantScopeMiddleware``) restores the previous scope.
    """
    access = resolve_tenant(user=user, slug=slug)
    activate(access.tenant)
    return access
