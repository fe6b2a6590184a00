from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from tenants.portal import audit_invalid_form, page_of, poll_ms, tenant_admin_page

from .disclosure import operation_error_for, pool_provisioning_problem
from core.errors import ServiceError
from .forms import PoolForm
from .models import Pool
from .selectors import operation_list_for_tenant, pool_list_for_user
from .services import pool_create, pool_update


def pools_with_problems(pools, *, user):
    """Pools from ``pool_list_for_user``, each with ``provisioning_problem``: ``{message,
    since, failures}`` while its provisioning keeps failing, as the user may read it."""
    pools = list(pools)
    for pool in pools:
        pool.provisioning_problem = pool_provisioning_problem(pool, user=user)
    return pools



# --- pools (owners and admins) ----------------------------------------------------------------
def admin_pool(request, pk) -> Pool:
    """A pool of the request's tenant (the scope is active), else 404."""
    return get_object_or_404(pool_list_for_user(user=request.user, is_admin=True), pk=pk)


def pools_redirect(request):
    return redirect("portal-pools", tenant_slug=request.tenant_access.tenant.slug)


def _pool_list_context(request) -> dict:
    pools = pools_with_problems(pool_list_for_user(user=request.user, is_admin=True)
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
    pool = admin_pool(request, pk)
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
    return pools_redirect(request)


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
            return pools_redirect(request)
    context = {"form": form, "pool": pool, "title": title, "service_error": service_error}
    return render(request, "portal/pools/form.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def pool_new(request):
    return _pool_form_page(request, pool=None)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def pool_edit(request, pk):
    return _pool_form_page(request, pool=admin_pool(request, pk))


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
