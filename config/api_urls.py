from django.http import JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.routers import SimpleRouter

from brokers.api.views import DesktopTakeoverViewSet, PoolConnectViewSet, SessionViewSet
from hypervisors.api.views import HostViewSet
from tenants.api.reports import AuditEventViewSet, UsageView
from tenants.api.tokens import ApiTokenViewSet, TokenView
from tenants.api.views import (
    InvitationViewSet,
    MembershipViewSet,
    TenantInvitationViewSet,
    TenantViewSet,
)

from vdi.api.views import DesktopViewSet, ImageViewSet, OperationViewSet, PoolViewSet

UUID = "[0-9a-fA-F-]{36}"

platform = SimpleRouter()
platform.register("hosts", HostViewSet, basename="host")
platform.register("images", ImageViewSet, basename="image")
platform.register("tenants", TenantViewSet, basename="tenant")
platform.register("invitations", InvitationViewSet, basename="my-invitation")
platform.register("auth/tokens", ApiTokenViewSet, basename="api-token")

tenant = SimpleRouter()
for prefix, viewset, basename in (
    ("members", MembershipViewSet, "member"),
    ("invitations", TenantInvitationViewSet, "invitation"),
    ("pools", PoolViewSet, "pool"),
    ("desktops", DesktopViewSet, "desktop"),
    ("sessions", SessionViewSet, "session"),
    ("operations", OperationViewSet, "operation"),
    ("audit", AuditEventViewSet, "audit"),
):
    viewset.lookup_value_regex = UUID
    tenant.register(prefix, viewset, basename=basename)
# The brokers app's actions on pools and desktops, under their prefixes and basenames: a
# router of their own, since one router takes each basename once.
brokering = SimpleRouter()
for prefix, viewset, basename in (
    ("pools", PoolConnectViewSet, "pool"),
    ("desktops", DesktopTakeoverViewSet, "desktop"),
):
    viewset.lookup_value_regex = UUID
    brokering.register(prefix, viewset, basename=basename)
HostViewSet.lookup_value_regex = ImageViewSet.lookup_value_regex = UUID
InvitationViewSet.lookup_value_regex = UUID
ApiTokenViewSet.lookup_value_regex = UUID



@csrf_exempt  # a POST to an unknown path is a 404, not a CSRF failure page
def not_found(request, *args, **kwargs):
    """Unknown API paths answer in the API's error envelope, not an HTML page."""
    body = {"error": {"code": "not_found", "message": "Not found.", "details": {}}}
    return JsonResponse(body, status=404)


app_name = "api"
urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="auth-token"),
    path("tenants/<slug:tenant_slug>/sessions/<uuid:pk>/console.vv",
         SessionViewSet.as_view({"get": "console_vv"}), name="session-console-vv"),
    path("tenants/<slug:tenant_slug>/usage/", UsageView.as_view(), name="usage"),
    path("tenants/<slug:tenant_slug>/", include([*tenant.urls, *brokering.urls])),
    path("", include(platform.urls)),
    re_path(r"", not_found),
]
