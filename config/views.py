"""The pages that span every app: health, the home page, and each organisation's dashboard
(its pools, the user's live sessions and desktops, with their buttons)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from brokers.choices import LIVE_SESSION_STATES, SessionState
from brokers.selectors import session_list_for_user
from brokers.services import session_end as session_end_service
from brokers.views import own_session
from core.errors import ServiceError
from tenants.portal import poll_ms, tenant_page
from tenants.selectors import tenant_list_for_user
from vdi.choices import CHANGING_DESKTOP_STATES, POWER_OPERATIONS_FROM, OperationKind
from vdi.disclosure import desktop_error_for
from vdi.selectors import desktop_list_for_user, pool_list_for_user
from vdi.services import desktop_power
from vdi.views import pools_with_problems

from .health import readiness

# What users may do to their desktops from the portal (deleting is for administrators).
PORTAL_POWER_ACTIONS = [kind for kind in POWER_OPERATIONS_FROM if kind != OperationKind.DELETE]


def healthz(request):
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Readiness: the database and the broker answer and at least one host is up; 503 with
    the reasons otherwise (load balancers take the process out of rotation)."""
    problems = readiness()
    ready = not any(problems.values())
    body = {"status": "ready" if ready else "not ready",
            "checks": {name: problem or "ok" for name, problem in problems.items()}}
    return JsonResponse(body, status=200 if ready else 503)


@login_required
def home(request):
    """Send the user to their organisation; with several, let them choose."""
    tenants = list(tenant_list_for_user(user=request.user)[:2])
    if len(tenants) == 1:
        return redirect("portal-dashboard", tenant_slug=tenants[0].slug)
    return render(request, "portal/home.html", {"tenants": tenant_list_for_user(user=request.user)})


def _desktops_with_actions(desktops, *, user):
    """The user's desktops, each with the power actions its state allows (``portal_actions``),
    its latest operation (``latest_operation``) and its error as the user may read it
    (``shown_error``)."""
    desktops = list(desktops)
    for desktop in desktops:
        desktop.portal_actions = [
            (kind, OperationKind(kind).label) for kind in PORTAL_POWER_ACTIONS
            if desktop.state in POWER_OPERATIONS_FROM[kind]]
        desktop.latest_operation = next(iter(desktop.operations.all()), None)
        desktop.shown_error = desktop_error_for(state=desktop.state, error=desktop.last_error,
                                                user=user)
    return desktops


def _dashboard_context(request) -> dict:
    access = request.tenant_access
    user = request.user
    pools = pools_with_problems(pool_list_for_user(user=user, is_admin=access.is_admin).filter(
        deleting_since__isnull=True), user=user)
    desktops = _desktops_with_actions(desktop_list_for_user(user=user, is_admin=False)
                                      .prefetch_related("operations"), user=user)
    sessions = list(session_list_for_user(user=user, is_admin=False).filter(
        state__in=LIVE_SESSION_STATES))
    changing = (any(d.state in CHANGING_DESKTOP_STATES
                    or (d.latest_operation and not d.latest_operation.is_finished)
                    for d in desktops)
                or any(s.state == SessionState.PENDING for s in sessions))
    return {"access": access, "pools": pools, "desktops": desktops, "sessions": sessions,
            "poll_ms": poll_ms(changing=changing)}


@require_safe
@tenant_page
def dashboard(request):
    """The pools the user may use, their live sessions and their desktops; the live part
    (``dashboard_live``) refreshes itself."""
    return render(request, "portal/dashboard.html", _dashboard_context(request))


@require_safe
@tenant_page
def dashboard_live(request):
    """The dashboard's live part alone, for its htmx polling."""
    return render(request, "portal/partials/dashboard_live.html", _dashboard_context(request))


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
    return dashboard_answer(request)


def dashboard_answer(request):
    """After a dashboard button: for htmx, the fresh live part and the messages in place;
    otherwise back to the dashboard."""
    if request.headers.get("HX-Request"):
        return render(request, "portal/partials/dashboard_action.html",
                      _dashboard_context(request))
    return redirect("portal-dashboard", tenant_slug=request.tenant_access.tenant.slug)


@require_POST
@tenant_page
def session_end(request, pk):
    session = own_session(request, pk)
    session_end_service(session=session, actor=request.user)
    messages.success(request, "Session ended.")
    if request.POST.get("next") == "sessions":
        return redirect("portal-sessions", tenant_slug=session.tenant.slug)
    return dashboard_answer(request)
