from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render

from brokers.selectors import session_list_for_user
from brokers.choices import LIVE_SESSION_STATES
from tenants.portal import tenant_page
from tenants.selectors import tenant_list_for_user

from .selectors import desktop_list_for_user, pool_list_for_user


def healthz(request):
    return JsonResponse({"status": "ok"})


@login_required
def home(request):
    """Send the user to their organisation; with several, let them choose."""
    tenants = list(tenant_list_for_user(user=request.user)[:2])
    if len(tenants) == 1:
        return redirect("portal-dashboard", tenant_slug=tenants[0].slug)
    return render(request, "portal/home.html", {"tenants": tenant_list_for_user(user=request.user)})


@tenant_page
def dashboard(request):
    access = request.tenant_access
    user = request.user
    context = {
        "access": access,
        "pools": pool_list_for_user(user=user, is_admin=access.is_admin),
        "desktops": desktop_list_for_user(user=user, is_admin=False),
        "sessions": session_list_for_user(user=user, is_admin=False).filter(
            state__in=LIVE_SESSION_STATES
        ),
    }
    return render(request, "portal/dashboard.html", context)
