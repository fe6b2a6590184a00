import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from brokers.selectors import session_list_for_user
from brokers.choices import LIVE_SESSION_STATES
from tenants.portal import tenant_page
from tenants.selectors import tenant_list_for_user

from .choices import POWER_OPERATIONS_FROM, OperationKind
from .errors import ServiceError
from .forms import PoolForm
from .health import readiness
from .models import Pool
from .selectors import desktop_list_for_user, pool_list_for_user
from .services import desktop_power, pool_create, pool_delete, pool_update

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


# --- pools (owners and admins) ----------------------------------------------------------------
def tenant_admin_page(view):
    """``tenant_page`` for the organisation's owners and admins (and platform staff):
    non-members get 404 as everywhere, members 403."""

    @tenant_page
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.tenant_access.is_admin:
            raise PermissionDenied("Only owners and admins of the organisation manage pools.")
        return view(request, *args, **kwargs)

    return wrapper


def _admin_pool(request, pk) -> Pool:
    """A pool of the request's tenant (the scope is active), else 404."""
    return get_object_or_404(pool_list_for_user(user=request.user, is_admin=True), pk=pk)


def _pools_redirect(request):
    return redirect("portal-pools", tenant_slug=request.tenant_access.tenant.slug)


@require_safe
@tenant_admin_page
def pool_list(request):
    pools = pool_list_for_user(user=request.user, is_admin=True).order_by("name")
    return render(request, "portal/pools/list.html", {"pools": pools})


def _pool_form_page(request, *, pool: Pool | None):
    """The create and edit page: the form validates the input's shape, the service decides
    (and its refusals are shown on the form)."""
    access = request.tenant_access
    form = PoolForm(request.POST if request.method == "POST" else None, instance=pool)
    title = pool.name if pool else ""  # the form changes pool's attributes as it validates
    service_error = None
    if request.method == "POST" and form.is_valid():
        try:
            if pool is None:
                saved = pool_create(tenant=access.tenant, actor=request.user, **form.cleaned_data)
            else:
                changed = {name: form.cleaned_data[name] for name in form.changed_data}
                saved = pool_update(pool=pool, actor=request.user, **changed)
        except ValidationError as error:
            form.add_service_errors(error)
        except ServiceError as error:
            service_error = error.message
        else:
            spares = saved.min_ready + saved.min_stopped
            if pool is None:
                what = "its spares are being prepared" if spares else "it has no spares to prepare"
                messages.success(request, f"Pool “{saved.name}” created; {what}.")
            else:
                messages.success(request, f"Pool “{saved.name}” saved; the change is being "
                                          f"applied now.")
            return _pools_redirect(request)
    context = {"form": form, "pool": pool, "title": title, "service_error": service_error}
    return render(request, "portal/pools/form.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def pool_new(request):
    return _pool_form_page(request, pool=None)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def pool_edit(request, pk):
    return _pool_form_page(request, pool=_admin_pool(request, pk))


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def pool_delete_confirm(request, pk):
    """GET: what deleting the pool does, with its desktops and live sessions; POST: do it."""
    pool = _admin_pool(request, pk)
    if request.method == "POST":
        try:
            pool_delete(pool=pool, actor=request.user)
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Pool “{pool.name}” is being deleted: its sessions have "
                                      f"ended and its desktops are being removed.")
        return _pools_redirect(request)
    live_sessions = session_list_for_user(user=request.user, is_admin=True).filter(
        pool=pool, state__in=LIVE_SESSION_STATES).count()
    return render(request, "portal/pools/delete.html",
                  {"pool": pool, "live_sessions": live_sessions})
