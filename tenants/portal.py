"""Portal pages under /t/{slug}/: the tenant is resolved once, here."""

from __future__ import annotations

import functools

from django.contrib.auth.decorators import login_required

from .resolution import activate_tenant


def tenant_page(view):
    """Log-in required; resolve ``tenant_slug`` (404 for non-members) and scope the request."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, tenant_slug, *args, **kwargs):
        request.tenant_access = activate_tenant(user=request.user, slug=tenant_slug)
        return view(request, *args, **kwargs)

    return wrapper
