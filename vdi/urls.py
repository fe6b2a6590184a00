from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from brokers import views as broker_views
from vdi import views

urlpatterns = [
    path("", views.home, name="portal-home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The one-time set-password link e-mailed to invited members (tenants.services).
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(),
         name="password_reset_complete"),
    path("t/<slug:tenant_slug>/", views.dashboard, name="portal-dashboard"),
    path("t/<slug:tenant_slug>/pools/", views.pool_list, name="portal-pools"),
    path("t/<slug:tenant_slug>/pools/new/", views.pool_new, name="portal-pool-new"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/edit/", views.pool_edit, name="portal-pool-edit"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/delete/", views.pool_delete_confirm,
         name="portal-pool-delete"),
    path("t/<slug:tenant_slug>/pools/<uuid:pk>/connect/", broker_views.connect,
         name="portal-connect"),
    path("t/<slug:tenant_slug>/desktops/<uuid:pk>/<slug:kind>/", views.desktop_power_action,
         name="portal-desktop-power"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/", broker_views.session_detail,
         name="portal-session"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/console.vv", broker_views.console_vv,
         name="portal-console-vv"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/console/", broker_views.console,
         name="portal-console"),
    path("t/<slug:tenant_slug>/sessions/<uuid:pk>/end/", broker_views.end,
         name="portal-session-end"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("vdi.api.urls", namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
