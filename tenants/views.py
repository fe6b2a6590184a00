"""Portal pages for the organisation's owners and admins: members and roles, quotas in use,
usage by month and the audit trail. Reads through ``tenants.selectors``, writes through
``tenants.services``."""

from __future__ import annotations

import re
from datetime import date

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from vdi.errors import InvalidInput, ServiceError

from .forms import MemberAddForm, MemberRoleForm
from .models import Membership
from .portal import audit_invalid_form, page_of, tenant_admin_page
from .selectors import audit_list, membership_list, month_list, quota_usage, usage_history
from .services import membership_invite, membership_remove, membership_update_role

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
CHART_MONTHS = 12


def _members_redirect(request):
    return redirect("portal-members", tenant_slug=request.tenant_access.tenant.slug)


def _membership(request, pk):
    return get_object_or_404(membership_list(tenant=request.tenant_access.tenant), pk=pk)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def member_list(request):
    """The members with their roles, and the form that adds one (by username or e-mail)."""
    tenant = request.tenant_access.tenant
    form = MemberAddForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and not form.is_valid():
        audit_invalid_form(request, form, action="member.add", target=Membership)
    if request.method == "POST" and form.is_valid():
        try:
            membership = membership_invite(
                tenant=tenant, actor=request.user, role=form.cleaned_data["role"],
                site_url=request.build_absolute_uri("/"), **form.invite_arguments())
        except InvalidInput as error:
            form.add_service_error(error)
        except ServiceError as error:
            form.add_error(None, error.message)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            how = ("an e-mail with a link to choose a password is on its way"
                   if "email" in form.invite_arguments()
                   and not membership.user.has_usable_password() else "they can log in now")
            messages.success(request, f"{membership.user.username} added as "
                                      f"{membership.get_role_display().lower()}; {how}.")
            return _members_redirect(request)
    members = page_of(request, membership_list(tenant=tenant).order_by("user__username"))
    return render(request, "portal/members/list.html", {
        "form": form, "members": members, "roles": MemberRoleForm.base_fields["role"].choices,
    }, status=400 if form.errors else 200)


@require_POST
@tenant_admin_page
def member_role(request, pk):
    membership = _membership(request, pk)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles offered.")
        return _members_redirect(request)
    try:
        membership = membership_update_role(membership=membership, actor=request.user,
                                            role=form.cleaned_data["role"])
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{membership.user.username} is now "
                                  f"{membership.get_role_display().lower()}.")
    return _members_redirect(request)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def member_remove(request, pk):
    """GET: confirm; POST: take the person out of the organisation (their account stays)."""
    membership = _membership(request, pk)
    if request.method == "POST":
        try:
            membership_remove(membership=membership, actor=request.user)
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"{membership.user.username} is no longer a member.")
        return _members_redirect(request)
    return render(request, "portal/members/remove.html", {"membership": membership})


@require_safe
@tenant_admin_page
def quotas(request):
    """Each quota with what is in use against it."""
    rows = quota_usage(tenant=request.tenant_access.tenant)
    for row in rows:
        if row["limit"] is not None:
            limit = row["limit"] or 1  # a zero quota: nothing may be used
            row.update(percent=min(100, round(100 * row["used"] / limit)), scale=limit,
                       low=0.7 * limit, high=0.9 * limit)
    return render(request, "portal/quotas.html", {"quotas": rows})


def _month_asked(request) -> tuple[date, str | None]:
    """The ``?month=YYYY-MM`` asked for (this month by default), and an error to show."""
    today = timezone.now().date()
    this_month = date(today.year, today.month, 1)
    raw = request.GET.get("month")
    if not raw:
        return this_month, None
    match = MONTH.match(raw)
    if match is None:
        return this_month, "Give the month as YYYY-MM."
    asked = date(int(match[1]), int(match[2]), 1)
    if asked > this_month:
        return this_month, "That month has not started yet."
    return asked, None


@require_safe
@tenant_admin_page
def usage(request):
    """The last twelve months as a chart, and one month's figures as a table."""
    tenant = request.tenant_access.tenant
    month, month_error = _month_asked(request)
    today = timezone.now().date()
    months = month_list(count=CHART_MONTHS, until=today)
    if month not in months:
        months = month_list(count=CHART_MONTHS, until=month)
    history = usage_history(tenant=tenant, months=months)
    chosen = next(row for row in history if row["month"] == month.strftime("%Y-%m"))
    return render(request, "portal/usage.html", {
        "chart": _chart(history, chosen["month"]), "chosen": chosen, "month": month,
        "month_error": month_error,
    }, status=400 if month_error else 200)


# The usage chart: one group of two bars (desktop hours, session hours) per month, drawn as
# SVG in the page itself, sized by attributes (no inline styles, no chart library).
_CHART = {"height": 160, "bar": 14, "gap": 2, "group": 44, "top": 10, "bottom": 28, "left": 44}


def _chart(history: list[dict], chosen: str) -> dict:
    c = _CHART
    peak = max([row["desktop_hours"] for row in history]
               + [row["session_hours"] for row in history] + [1.0])
    scale = _nice_ceiling(peak)
    months = []
    for index, row in enumerate(history):
        x = c["left"] + index * c["group"] + 6
        bars = []
        for offset, key, css in ((0, "desktop_hours", "bar-desktops"),
                                 (c["bar"] + c["gap"], "session_hours", "bar-sessions")):
            height = round(c["height"] * row[key] / scale, 1)
            bars.append({"x": x + offset, "y": c["top"] + c["height"] - height,
                         "height": height, "width": c["bar"], "css": css, "value": row[key]})
        months.append({"month": row["month"], "label": date.fromisoformat(row["month"] + "-01")
                       .strftime("%b"), "x": x, "label_x": x + c["bar"] + c["gap"] / 2,
                       "bars": bars, "chosen": row["month"] == chosen, "row": row})
    ticks = [{"label": f"{scale * step / 4:g}",
              "y": c["top"] + c["height"] - c["height"] * step / 4} for step in range(5)]
    return {"months": months, "ticks": ticks, "width": c["left"] + len(history) * c["group"] + 8,
            "height": c["top"] + c["height"] + c["bottom"], "axis_x": c["left"],
            "base_y": c["top"] + c["height"], "label_y": c["top"] + c["height"] + 18}


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ that is at least ``value``: round axis ticks."""
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


@require_safe
@tenant_admin_page
def audit(request):
    """The organisation's audit trail, newest first."""
    events = page_of(request, audit_list(tenant=request.tenant_access.tenant))
    return render(request, "portal/audit.html", {"events": events})
