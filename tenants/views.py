"""Portal pages for the organisation's owners and admins: members, invitations and roles,
quotas in use, usage by month and the audit trail; and, for anyone signed in, the
invitations they received. Reads through ``tenants.selectors`` (and the invitations'
queryset), writes through ``tenants.services``."""

from __future__ import annotations

import re
from datetime import date

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from core.errors import InvalidInput, ServiceError

from .audit import audit_details_for
from .forms import MemberAddForm, MemberRoleForm
from .models import Invitation, InvitationState
from .portal import audit_invalid_form, page_of, tenant_admin_page
from .scoping import scopes_disabled
from .selectors import audit_list, membership_list, month_list, quota_usage, usage_history
from .members import (
    invitation_accept,
    invitation_decline,
    invitation_revoke,
    invitation_sets_password,
    invitation_token_matches,
    membership_invite,
    membership_remove,
    membership_update_role,
)

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
CHART_MONTHS = 12


def _members_redirect(request):
    return redirect("portal-members", tenant_slug=request.tenant_access.tenant.slug)


def _membership(request, pk):
    return get_object_or_404(membership_list(tenant=request.tenant_access.tenant), pk=pk)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def member_list(request):
    """The members with their roles, the pending invitations, and the form that invites
    someone (by username or e-mail). Its answer is the same whether or not an account has
    that username or address."""
    tenant = request.tenant_access.tenant
    form = MemberAddForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and not form.is_valid():
        audit_invalid_form(request, form, action="member.invite", target=Invitation)
    if request.method == "POST" and form.is_valid():
        try:
            invitation = membership_invite(
                tenant=tenant, actor=request.user, role=form.cleaned_data["role"],
                site_url=request.build_absolute_uri("/"), **form.invite_arguments())
        except InvalidInput as error:
            form.add_service_error(error)
        except ServiceError as error:
            form.add_error(None, error.message)
        except ValidationError as error:
            form.add_error(None, error.messages)
        else:
            messages.success(request, f"{invitation.addressee} is invited as "
                                      f"{invitation.get_role_display().lower()}: they become "
                                      "a member once they accept.")
            return _members_redirect(request)
    members = page_of(request, membership_list(tenant=tenant).order_by("user__username"))
    invitations = (Invitation.objects.filter(state=InvitationState.PENDING)
                   .select_related("inviter").order_by("expires_at", "id"))
    return render(request, "portal/members/list.html", {
        "form": form, "members": members, "invitations": invitations,
        "roles": MemberRoleForm.base_fields["role"].choices,
    }, status=400 if form.errors else 200)


@require_POST
@tenant_admin_page
def member_invitation_revoke(request, pk):
    """Withdraw a pending invitation: its link stops working."""
    invitation = get_object_or_404(Invitation.objects.all(), pk=pk)
    try:
        invitation_revoke(invitation=invitation, actor=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"The invitation of {invitation.addressee} is revoked.")
    return _members_redirect(request)


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
    for event in events:
        event.details = audit_details_for(action=event.action, details=event.details,
                                          user=request.user)
    return render(request, "portal/audit.html", {"events": events})


# --- the invitations a person received --------------------------------------------------------
def _link_session_key(pk) -> str:
    return f"invitation-link:{pk}"


@login_required
@require_safe
def invitation_list(request):
    """The signed-in person's open invitations, each to accept or decline."""
    with scopes_disabled():  # they are not in these organisations (yet)
        invitations = list(Invitation.objects.addressed_to(request.user).open()
                           .select_related("tenant", "inviter").order_by("expires_at"))
    return render(request, "portal/members/my_invitations.html", {"invitations": invitations})


@require_safe
def invitation_link(request, pk, token):
    """The e-mailed link. Its token moves into the session and out of the address bar (and
    of any Referer), as Django's password reset does, then the invitation's page opens."""
    with scopes_disabled():
        invitation = Invitation.objects.filter(pk=pk).first()
    if invitation is None or not invitation.is_open or not invitation_token_matches(
            invitation=invitation, token=token):
        return render(request, "registration/member_invite_invalid.html", status=404)
    request.session[_link_session_key(pk)] = token
    return redirect("invitation-respond", pk=pk)


@require_http_methods(["GET", "HEAD", "POST"])
def invitation_respond(request, pk):
    """One invitation, for the person invited: accept or decline it. Reached from the
    e-mailed link (the session holds its token) or from the invitations page. For an account
    nobody has used yet, accepting also chooses its password; anyone else must sign in as
    the account invited. Nobody else learns anything about it (404)."""
    with scopes_disabled():
        invitation = (Invitation.objects.select_related("tenant", "inviter", "user")
                      .filter(pk=pk).first())
    token = request.session.get(_link_session_key(pk))
    by_link = invitation is not None and invitation_token_matches(invitation=invitation,
                                                                  token=token)
    if by_link and invitation.is_open and invitation_sets_password(invitation=invitation):
        return _invitation_accept_with_password(request, invitation, token)
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if invitation is None or not invitation.is_for(request.user):
        if by_link:  # they hold the link, so they know of it: say why it does not work
            return render(request, "registration/member_invite_respond.html",
                          {"invitation": invitation, "other_account": True}, status=403)
        raise Http404("No such invitation.")
    if request.method == "POST":
        try:
            if request.POST.get("answer") == "accept":
                invitation_accept(invitation=invitation, user=request.user)
            elif request.POST.get("answer") == "decline":
                invitation_decline(invitation=invitation, user=request.user)
            else:
                raise InvalidInput("Accept or decline the invitation.")
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            request.session.pop(_link_session_key(pk), None)
            tenant = invitation.tenant
            if request.POST["answer"] == "accept":
                messages.success(request, f"Welcome to {tenant.name}.")
                return redirect("portal-dashboard", tenant_slug=tenant.slug)
            messages.success(request, f"You declined the invitation to {tenant.name}.")
            return redirect("portal-invitations")
        invitation.refresh_from_db()
    return render(request, "registration/member_invite_respond.html",
                  {"invitation": invitation})


def _invitation_accept_with_password(request, invitation, token):
    """The e-mailed link of an account nobody has used yet: choosing its password (Django's
    password rules) accepts the invitation; then the person signs in."""
    form = SetPasswordForm(invitation.user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation_accept(invitation=invitation, user=invitation.user, token=token,
                              password=form.cleaned_data["new_password1"])
        except ServiceError as error:
            form.add_error(None, error.message)
        else:
            request.session.pop(_link_session_key(invitation.pk), None)
            tenant = invitation.tenant
            messages.success(request, f"Your password is set and you are a member of "
                                      f"{tenant.name}: log in.")
            login = reverse("login")
            next_url = reverse("portal-dashboard", kwargs={"tenant_slug": tenant.slug})
            return redirect(f"{login}?{urlencode({'next': next_url})}")
    # 200 with the form's errors, as Django's own set-password page answers.
    return render(request, "registration/member_invite_respond.html",
                  {"invitation": invitation, "form": form})
