from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from brokers import views as broker_views
from tenants import views as tenant_views
from config import metrics
from vdi import views

from . import views as project_views

urlpatterns = [
    path("", project_views.home, name="portal-home"),
    path("healthz", project_views.healthz, name="healthz"),
    path("readyz", project_views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(),
         name="password_reset_complete"),
    # Not Django's default template names: Django admin's own password pages use those.
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(
        template_name="registration/password_change.html"), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(
        template_name="registration/password_changed.html"), name="password_change_done"),
    # Invitations: the signed-in person's, and the link they are e-mailed (tenants.views).
    path("invitations/", tenant_views.invitation_list, name="portal-invitations"),
    path("invitations/<uuid:pk>/", tenant_views.invitation_respond, name="invitation-respond"),
    path("invitations/<uuid:pk>/<str:token>/", tenant_views.invitation_link,
         name="invitation-link"),
    path("t/<slug:tenant_slug>/", project_views.dashboard, name="portal-dashboard"),
    path("t/<slug:tenant_slug>/live/", project_views.dashboard_live, name="portal-dashboard-live"),
    path("t/<slug:tenant_slug>/pools/", views.pool_list, name="portal-pools"),
    path("t/<slug:tenant_slug>/pools/live/", views.pool_list_live, name="portal-pools-live"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/toggle/", views.pool_toggle,
         name="portal-pool-toggle"),
    path("t/<slug:tenant_slug>/pools/new/", views.pool_new, name="portal-pool-new"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/edit/", views.pool_edit, name="portal-pool-edit"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/delete/", broker_views.pool_delete_confirm,
         name="portal-pool-delete"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/connect/", broker_views.connect,
         name="portal-connect"),
    path("t/<slug:tenant_slug>/desktops/<uuid:pk>/<slug:kind>/", project_views.desktop_power_action,
         name="portal-desktop-power"),
    path("t/<slug:tenant_slug>/sessions/", broker_views.session_list, name="portal-sessions"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/", broker_views.session_detail,
         name="portal-session"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/status/", broker_views.session_status,
         name="portal-session-status"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/console.vv", broker_views.console_vv,
         name="portal-console-vv"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/console/", broker_views.console,
         name="portal-console"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/end/", project_views.session_end,
         name="portal-session-end"),
    # Owners and admins of the organisation.
    path("t/<slug:tenant_slug>/members/", tenant_views.member_list, name="portal-members"),
    path("t/<slug:tenant_slug>/members/<uuid:pk>/role/", tenant_views.member_role,
         name="portal-member-role"),
    path("t/<slug:tenant_slug>/members/<uuid:pk>/remove/", tenant_views.member_remove,
         name="portal-member-remove"),
    path("t/<slug:tenant_slug>/members/invitations/<uuid:pk>/revoke/",
         tenant_views.member_invitation_revoke, name="portal-invitation-revoke"),
    path("t/<slug:tenant_slug>/quotas/", tenant_views.quotas, name="portal-quotas"),
    path("t/<slug:tenant_slug>/usage/", tenant_views.usage, name="portal-usage"),
    path("t/<slug:tenant_slug>/operations/", views.operation_list, name="portal-operations"),
    path("t/<slug:tenant_slug>/audit/", tenant_views.audit, name="portal-audit"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls", namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's init script as a file of its own: the page runs no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]

# Error pages in the portal's look (JSON under /api/).
handler403 = "config.errorpages.permission_denied"
handler404 = "config.errorpages.page_not_found"
handler500 = "config.errorpages.server_error"
