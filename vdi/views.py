from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from brokers.selectors import session_list_for_user
from brokers.choices import LIVE_SESSION_STATES, SessionState
from tenants.portal import audit_invalid_form, page_of, poll_ms, tenant_admin_page, tenant_page
from tenants.selectors import tenant_list_for_user

from .choices import CHANGING_DESKTOP_STATES, POWER_OPERATIONS_FROM, OperationKind
from .disclosure import desktop_error_for, operation_error_for, pool_provisioning_problem
from core.errors import ServiceError
from .forms import PoolForm
from config.health import readiness
from .models import Pool
from .selectors import desktop_list_for_user, operation_list_for_tenant, pool_list_for_user
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


def _pools_with_problems(pools, *, user):
    """Pools from ``pool_list_for_user``, each with ``provisioning_problem``: ``{message,
    since, failures}`` while its provisioning keeps failing, as the user may read it."""
    pools = list(pools)
    for pool in pools:
        pool.provisioning_problem = pool_provisioning_problem(pool, user=user)
    return pools


def _dashboard_context(request) -> dict:
    access = request.tenant_access
    user = request.user
    pools = _pools_with_problems(pool_list_for_user(user=user, is_admin=access.is_admin).filter(
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


# --- pools (owners and admins) ----------------------------------------------------------------
def _admin_pool(request, pk) -> Pool:
    """A pool of the request's tenant (the scope is active), else 404."""
    return get_object_or_404(pool_list_for_user(user=request.user, is_admin=True), pk=pk)


def _pools_redirect(request):
    return redirect("portal-pools", tenant_slug=request.tenant_access.tenant.slug)


def _pool_list_context(request) -> dict:
    pools = _pools_with_problems(pool_list_for_user(user=request.user, is_admin=True)
                                 .order_by("name"), user=request.user)
    changing = any(pool.changing_count or pool.is_deleting
                   or pool.ready_count < pool.min_ready or pool.stopped_count < pool.min_stopped
                   for pool in pools if pool.enabled or pool.is_deleting)
    return {"pools": pools, "poll_ms": poll_ms(changing=changing)}


@require_safe
@tenant_admin_page
def pool_list(request):
    """Every pool with its spares and desktops, counted live (``pool_list_live``)."""
    return render(request, "portal/pools/list.html", _pool_list_context(request))


@require_safe
@tenant_admin_page
def pool_list_live(request):
    return render(request, "portal/pools/list_live.html", _pool_list_context(request))


@require_POST
@tenant_admin_page
def pool_toggle(request, pk):
    """Enable a disabled pool or disable an enabled one."""
    pool = _admin_pool(request, pk)
    try:
        pool = pool_update(pool=pool, actor=request.user, enabled=not pool.enabled)
    except ServiceError as error:
        messages.error(request, error.message)
    except ValidationError as error:  # the pool no longer validates: edit it to see why
        messages.error(request, f"Pool “{pool.name}”: {' '.join(error.messages)}")
    else:
        state = "enabled: members can connect" if pool.enabled else \
            "disabled: it keeps its desktops but accepts no Connect"
        messages.success(request, f"Pool “{pool.name}” {state}.")
    return _pools_redirect(request)


def _pool_form_page(request, *, pool: Pool | None):
    """The create and edit page: the form validates the input's shape, the service decides
    (and its refusals are shown on the form)."""
    access = request.tenant_access
    form = PoolForm(request.POST if request.method == "POST" else None, instance=pool)
    title = pool.name if pool else ""  # the form changes pool's attributes as it validates
    service_error = None
    if request.method == "POST" and not form.is_valid():
        audit_invalid_form(request, form, action="pool.update" if pool else "pool.create",
                           target=pool or Pool)
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


# --- the tenant's operations (owners and admins) ---------------------------------------------
@require_safe
@tenant_admin_page
def operation_list(request):
    """Every operation of the organisation, newest first; ``?failed=1`` for the failed ones."""
    failed_only = request.GET.get("failed") == "1"
    operations = page_of(request, operation_list_for_tenant(failed_only=failed_only))
    for operation in operations:
        operation.shown_error = operation_error_for(kind=operation.kind, error=operation.error,
                                                    user=request.user)
    return render(request, "portal/operations.html",
                  {"operations": operations, "failed_only": failed_only})
