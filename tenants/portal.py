"""Portal pages under /t/{slug}/: the tenant is resolved once, here."""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator

from core.errors import Forbidden, InvalidInput

from .audit import audit_failure
from .resolution import activate_tenant

PAGE_SIZE = 50
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def tenant_page(view):
    """Log-in required; resolve ``tenant_slug`` (404 for non-members) and scope the request."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, tenant_slug, *args, **kwargs):
        request.tenant_access = activate_tenant(user=request.user, slug=tenant_slug)
        return view(request, *args, **kwargs)

    return wrapper


def tenant_admin_page(view):
    """``tenant_page`` for the organisation's owners and admins (and platform staff):
    non-members get 404 as everywhere, members 403."""

    @tenant_page
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.tenant_access.is_admin:
            refusal = Forbidden("Only the organisation's owners and admins may open this page.")
            if request.method not in SAFE_METHODS:  # a change refused: the trail keeps it
                tenant = request.tenant_access.tenant
                audit_failure(refusal, tenant=tenant, action=f"portal.{view.__name__}",
                              target=tenant, details={"path": request.path})
            raise PermissionDenied(refusal.message)
        return view(request, *args, **kwargs)

    return wrapper


def audit_invalid_form(request, form, *, action: str, target) -> None:
    """A portal form refused before any service ran is a refused change too: record it as
    the API records a 400 (the fields at fault, never their values)."""
    audit_failure(InvalidInput("The form was not valid."), tenant=request.tenant_access.tenant,
                  action=action, target=target, details={"fields": sorted(form.errors)})


def poll_ms(*, changing: bool) -> int:
    """How soon a live part of a page asks again: every ``VDI["PORTAL_POLL_S"]`` while
    something is changing, five times slower once everything has settled."""
    seconds = settings.VDI["PORTAL_POLL_S"] * (1 if changing else 5)
    return max(100, round(seconds * 1000))


def page_of(request, items, per_page: int = PAGE_SIZE):
    """The ``?page=`` page of ``items`` (the last one if out of range)."""
    return Paginator(items, per_page).get_page(request.GET.get("page"))
