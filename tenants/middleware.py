from django.conf import settings

from .scoping import no_scope, scopes_disabled


class TenantScopeMiddleware:
    """Every request starts with no tenant scope and leaves none behind.

    Tenant pages and API views activate their tenant through ``tenants.resolution``; Django
    admin is platform staff's cross-tenant view, so its requests run with scopes disabled.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.admin_prefix = "/" + getattr(settings, "ADMIN_URL", "admin/")

    def __call__(self, request):
        with no_scope():
            if request.path.startswith(self.admin_prefix) and request.user.is_staff:
                with scopes_disabled():
                    return self.get_response(request)
            return self.get_response(request)
