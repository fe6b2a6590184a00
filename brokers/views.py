"""Portal pages for connecting: Connect, the session page with its ticket, the .vv file and
the browser console."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from tenants.portal import tenant_page
from vdi.errors import ServiceError
from vdi.selectors import pool_list_for_user

from .choices import SessionState, TicketKind
from .consolefile import vv_response
from .selectors import session_list_for_user
from .services import session_connect, session_end, ticket_issue


def _own_session(request, pk):
    return get_object_or_404(session_list_for_user(user=request.user, is_admin=False), pk=pk)


def _session_page(request, session, issued=None, status=200):
    context = {"session": session, "issued": issued,
               "retry_after": settings.VDI["RETRY_AFTER_S"]}
    return render(request, "portal/session.html", context, status=status)


@require_POST
@tenant_page
def connect(request, pk):
    access = request.tenant_access
    pool = get_object_or_404(pool_list_for_user(user=request.user, is_admin=access.is_admin),
                             pk=pk)
    try:
        result = session_connect(user=request.user, pool=pool)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("portal-dashboard", tenant_slug=access.tenant.slug)
    return _session_page(request, result.session, result.ticket)


@tenant_page
def session_detail(request, pk):
    session = _own_session(request, pk)
    issued = None
    if request.method == "POST":
        try:
            issued = ticket_issue(session=session, user=request.user)
        except ServiceError as error:
            messages.error(request, error.message)
    return _session_page(request, session, issued)


@tenant_page
def console_vv(request, pk):
    session = _own_session(request, pk)
    try:
        issued = ticket_issue(session=session, user=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("portal-session", tenant_slug=session.tenant.slug, pk=session.pk)
    if issued is None:
        messages.warning(request, "The desktop did not answer in time; please try again.")
        return redirect("portal-session", tenant_slug=session.tenant.slug, pk=session.pk)
    return vv_response(session=session, ticket=issued.ticket, password=issued.password)


def console_proxy_url(request) -> str:
    """The websocket URL of the console proxies, as the browser must dial it."""
    configured = settings.VDI["CONSOLE_PROXY_URL"]
    if configured:
        return configured
    # The demo's default: the proxy on the portal's host name, at the port it listens on.
    port = settings.VDI["CONSOLE_PROXY_LISTEN"].rpartition(":")[2]
    host = request.get_host()
    host = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
    return f"{'wss' if request.is_secure() else 'ws'}://{host}:{port}/"


@never_cache
@tenant_page
def console(request, pk):
    """The browser console: a fresh VNC ticket and its single-use proxy token, handed to
    noVNC in this (uncached) page only, never in a URL the portal logs."""
    session = _own_session(request, pk)
    slug = session.tenant.slug
    if session.state == SessionState.PENDING:
        return redirect("portal-session", tenant_slug=slug, pk=session.pk)
    context = {"session": session, "issued": None, "console": None}
    if session.state == SessionState.ENDED:
        return render(request, "portal/console.html", context)
    try:
        issued = ticket_issue(session=session, user=request.user, kind=TicketKind.BROWSER)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("portal-session", tenant_slug=slug, pk=session.pk)
    if issued is None:
        messages.warning(request, "The desktop did not answer in time; please try again.")
        return redirect("portal-session", tenant_slug=slug, pk=session.pk)
    context["issued"] = issued
    if issued.ticket.password_applied and issued.token:
        base = console_proxy_url(request)
        context["console"] = {
            # The token rides in the websocket URL's query (websockify reads it there); the
            # proxy masks it in its logs and it works once.
            "url": base + ("&" if "?" in base else "?") + urlencode({"token": issued.token}),
            "password": issued.password,
            "title": session.pool.name,
            "expires_at": issued.ticket.expires_at.isoformat(),
        }
    return render(request, "portal/console.html", context)


@require_POST
@tenant_page
def end(request, pk):
    session = _own_session(request, pk)
    session_end(session=session, actor=request.user)
    messages.success(request, "Session ended.")
    return redirect("portal-dashboard", tenant_slug=session.tenant.slug)
