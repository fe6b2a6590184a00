"""The tenancy kernel: which tenant the current code acts for, and managers that fail closed.

A query on a tenant-owned model runs only inside ``tenant_scope(tenant)`` (filtered to that
tenant) or inside ``scopes_disabled()`` (platform code that deliberately crosses tenants:
Celery tasks, Django admin, operator commands). Anywhere else it raises ``TenantScopeError``,
so a forgotten filter is an error, never a leak.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Iterator

from django.db import models

if TYPE_CHECKING:
    from tenants.models import Tenant

_current_tenant: ContextVar["Tenant | None"] = ContextVar("current_tenant", default=None)
_scopes_disabled: ContextVar[bool] = ContextVar("scopes_disabled", default=False)


class TenantScopeError(RuntimeError):
    """A tenant-owned model was queried with no tenant scope active."""


def current_tenant() -> "Tenant | None":
    return _current_tenant.get()


def activate(tenant: "Tenant") -> None:
    """Make ``tenant`` current until the enclosing ``no_scope()`` (the request) ends."""
    _current_tenant.set(tenant)


@contextmanager
def tenant_scope(tenant: "Tenant") -> Iterator["Tenant"]:
    tenant_token = _current_tenant.set(tenant)
    disabled_token = _scopes_disabled.set(False)
    try:
        yield tenant
    finally:
        _scopes_disabled.reset(disabled_token)
        _current_tenant.reset(tenant_token)


@contextmanager
def scopes_disabled() -> Iterator[None]:
    token = _scopes_disabled.set(True)
    try:
        yield
    finally:
        _scopes_disabled.reset(token)


@contextmanager
def no_scope() -> Iterator[None]:
    """Clear any scope: used around each request so nothing leaks between requests."""
    tenant_token = _current_tenant.set(None)
    disabled_token = _scopes_disabled.set(False)
    try:
        yield
    finally:
        _scopes_disabled.reset(disabled_token)
        _current_tenant.reset(tenant_token)


class TenantScopedQuerySet(models.QuerySet):
    pass


class TenantScopedManager(models.Manager.from_queryset(TenantScopedQuerySet)):
    """Default manager of every tenant-owned model."""

    def tenant_filter(self, tenant: "Tenant") -> models.Q:
        return models.Q(tenant=tenant)

    def get_queryset(self):
        queryset = super().get_queryset()
        if _scopes_disabled.get():
            return queryset
        tenant = _current_tenant.get()
        if tenant is None:
            raise TenantScopeError(
                f"{self.model._meta.label} queried outside a tenant scope; "
                "use tenant_scope(tenant) or, for platform code, scopes_disabled()"
            )
        return queryset.filter(self.tenant_filter(tenant))


class TenantOrSharedManager(TenantScopedManager):
    """For models whose rows are either a tenant's own or shared by all (tenant is null)."""

    def tenant_filter(self, tenant: "Tenant") -> models.Q:
        return models.Q(tenant=tenant) | models.Q(tenant__isnull=True)
