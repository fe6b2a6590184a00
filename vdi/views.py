from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from brokers.selectors import session_list_for_user
from brokers.choices import LIVE_SESSION_STATES
from tenants.portal import tenant_page
from tenants.selectors import tenant_list_for_user

from .choices import POWER_OPERATIONS_FROM, OperationKind
from .errors import ServiceError
from .selectors import desktop_list_for_user, pool_list_for_user
from .services import desktop_power

# What users may do to their desktops from the portal (deleting is for administrators).
PORTAL_POWER_ACTIONS = [kind for kind in POWER_OPERATIONS_FROM if kind != OperationKind.DELETE]


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
        "desktops": desktop_list_for_user(user=user, is_admin=False).prefetch_related(
            "operations"),
        "power_actions": PORTAL_POWER_ACTIONS,
        "sessions": session_list_for_user(user=user, is_admin=False).filter(
            state__in=LIVE_SESSION_STATES
        ),
    }
    return render(request, "portal/dashboard.html", context)


@require_POST
@tenant_page
def desktop_power_action(request, pk, kind):
    """A power button on the dashboard: start, shutdown, poweroff, reboot or reset."""
    if kind not in PORTAL_POWER_ACTIONS:
        raise Http404
    access = request.tenant_access
    desktop = get_object_or_404(
        desktop_list_for_user(user=request.user, is_admin=access.is_admin), pk=pk)
    try:
        desktop_power(desktop=desktop, kind=kind, actor=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{OperationKind(kind).label}: {desktop.name} — on its way.")
    return redirect("portal-dashboard", tenant_slug=access.tenant.slug)
