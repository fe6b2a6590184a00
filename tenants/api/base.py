"""Base classes for tenant-scoped API views: the tenant is resolved once, here."""

from __future__ import annotations

from rest_framework import permissions

from tenants.resolution import TenantAccess, activate_tenant
from core.errors import Forbidden


class TenantScopedMixin:
    """Views under /api/v1/tenants/{tenant_slug}/: members only, others get 404.

    After authentication, the slug is resolved and its tenant becomes the active scope, so
    every query in the view is confined to it.
    """

    access: TenantAccess
    admin_actions: frozenset[str] = frozenset(
        {"create", "update", "partial_update", "destroy"}
    )

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.access = activate_tenant(user=request.user, slug=kwargs["tenant_slug"])
        if getattr(self, "action", None) in self.admin_actions and not self.access.is_admin:
            raise Forbidden("Only the organisation's owners and admins may do this.")

    @property
    def tenant(self):
        return self.access.tenant

    @property
    def is_admin(self) -> bool:
        return self.access.is_admin


class IsStaff(permissions.BasePermission):
    message = "Only platform staff may do this."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff)


class ScopedQuerysetMixin:
    """``get_queryset`` from a selector; an empty queryset while the schema is generated."""

    model = None

    def scoped_queryset(self):
        raise NotImplementedError

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.model._base_manager.none()
        return self.scoped_queryset()
