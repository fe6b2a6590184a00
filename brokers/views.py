"""Portal pages for connecting: Connect, the session page with its ticket, the .vv file and
the browser console."""

import functools
import logging
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from tenants.portal import page_of, poll_ms, tenant_admin_page, tenant_page
from vdi.choices import DesktopState
from core.errors import ServiceError
from vdi.selectors import pool_list_for_user
from vdi.services import pool_delete
from vdi.views import admin_pool, pools_redirect

from .choices import LIVE_SESSION_STATES, SessionState, TicketKind
from .consolefile import vv_response
from .selectors import session_list_for_user
from .services import session_connect
from .services.tickets import console_file_ticket_issue, ticket_issue

logger = logging.getLogger(__name__)


def own_session(request, pk):
    return get_object_or_404(session_list_for_user(user=request.user, is_admin=False), pk=pk)


def _session_page(request, session, issued=None):
    context = {"session": session, "issued": issued, **_session_progress(session)}
    return render(request, "portal/session.html", context)


# How far a pending Connect has come, by what its desktop is doing: (step, of steps, words).
_PREPARING_STEPS = {
    DesktopState.PENDING: (1, "Waiting for a host"),
    DesktopState.PROVISIONING: (2, "Creating the desktop"),
    DesktopState.STOPPED: (3, "Starting the desktop"),
    DesktopState.STARTING: (3, "Starting the desktop"),
    DesktopState.RUNNING: (4, "Opening the console"),
}


def _session_progress(session) -> dict:
    """What the "preparing your desktop" page shows about a pending session, and how soon it
    asks again."""
    if session.state != SessionState.PENDING:
        return {"progress": None, "poll_ms": 0}
    desktop_state = session.desktop.state if session.desktop else DesktopState.PENDING
    step, words = _PREPARING_STEPS.get(desktop_state, (1, "Waiting for the desktop"))
    operation = session.operation
    if operation is not None and operation.waiting_for:
        words = "Waiting for a free boot slot on the host"
    return {"progress": {"step": step, "steps": len(set(_PREPARING_STEPS.values())),
                         "words": words},
            "poll_ms": poll_ms(changing=True), "retry_after": settings.VDI["RETRY_AFTER_S"]}


@require_POST
@tenant_page
def connect(request, pk):
    """Connect to a pool. Ready: the session's page with the fresh ticket's connection
    details. Pending: a redirect to the session's page, "preparing your desktop", which
    follows the preparation live and moves on once the desktop is ready."""
    access = request.tenant_access
    pool = get_object_or_404(pool_list_for_user(user=request.user, is_admin=access.is_admin),
                             pk=pk)
    try:
        result = session_connect(user=request.user, pool=pool)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("portal-dashboard", tenant_slug=access.tenant.slug)
    if result.pending:
        return redirect("portal-session", tenant_slug=access.tenant.slug, pk=result.session.pk)
    return _session_page(request, result.session, result.ticket)


@require_http_methods(["GET", "HEAD", "POST"])
@tenant_page
def session_detail(request, pk):
    """The session's page; POST shows a fresh ticket's connection details once."""
    session = own_session(request, pk)
    issued = None
    if request.method == "POST":
        try:
            issued = ticket_issue(session=session, user=request.user)
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            if issued is None:
                messages.warning(request, "The desktop did not answer in time; please try "
                                          "again.")
    return _session_page(request, session, issued)


@require_safe
@tenant_page
def session_status(request, pk):
    """The live part of a pending session's page. Once the session is no longer pending the
    whole page reloads (``HX-Refresh``) to offer the console or explain what happened."""
    session = own_session(request, pk)
    response = render(request, "portal/partials/session_status.html",
                      {"session": session, **_session_progress(session)})
    if session.state != SessionState.PENDING:
        response["HX-Refresh"] = "true"
    return response


@require_safe
@tenant_page
def session_list(request):
    """The user's sessions: the live ones first, then the history, newest first."""
    sessions = session_list_for_user(user=request.user, is_admin=False)
    live = list(sessions.filter(state__in=LIVE_SESSION_STATES))
    ended = page_of(request, sessions.exclude(state__in=LIVE_SESSION_STATES))
    return render(request, "portal/sessions.html", {"live_sessions": live, "ended": ended})


@tenant_page
def console_vv(request, pk):
    session = own_session(request, pk)
    try:
        issued = console_file_ticket_issue(session=session, user=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("portal-session", tenant_slug=session.tenant.slug, pk=session.pk)
    if issued is None:
        messages.warning(request, "The desktop did not answer in time; please try again.")
        return redirect("portal-session", tenant_slug=session.tenant.slug, pk=session.pk)
    return vv_response(session=session, ticket=issued.ticket, password=issued.password)


# --- the browser console's websocket: where it goes, and the CSP that lets the page dial it -
def websocket_origin(url: str) -> str:
    """ws(s)://host[:port] of a websocket URL: the CSP source that lets a page dial it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def csp_allows_console_proxy(view):
    """The browser console page's websocket goes to the console proxies, on another port
    or host than the portal: its connect-src names them."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        update = dict(getattr(response, "_csp_update", None) or {})
        update["connect-src"] = [*update.get("connect-src", []),
                                 websocket_origin(console_proxy_url(request))]
        response._csp_update = update
        return response

    return wrapper


def console_proxy_url(request) -> str:
    """The websocket URL of the console proxies, as the browser must dial it: the configured
    one, else the proxy on the portal's host name at the port it listens on, over wss://
    when it serves TLS itself (or the page is https, which may not open ws://)."""
    url = settings.VDI["CONSOLE_PROXY_URL"]
    if not url:
        port = settings.VDI["CONSOLE_PROXY_LISTEN"].rpartition(":")[2]
        host = request.get_host()
        host = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
        secure = bool(settings.VDI["CONSOLE_PROXY_TLS_CERT"]) or request.is_secure()
        url = f"{'wss' if secure else 'ws'}://{host}:{port}/"
    if request.is_secure() and url.lower().startswith("ws://"):
        warn_mixed_content_once(url)
    return url


@functools.cache
def warn_mixed_content_once(url: str) -> None:
    """Once per URL and process: every console page would fail the same way."""
    logger.warning("the console proxy URL %s is ws:// but the portal is served over https: "
                   "browsers block it as mixed content, so consoles cannot open; set "
                   "VDI_CONSOLE_PROXY_URL to a wss:// URL", url)


@never_cache
@csp_allows_console_proxy
@tenant_page
def console(request, pk):
    """The browser console: a fresh VNC ticket and its single-use proxy token, handed to
    noVNC in this (uncached) page only, never in a URL the portal logs."""
    session = own_session(request, pk)
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


# --- deleting a pool ends its sessions: the page says how many (owners and admins) ----------
@require_http_methods(["GET", "HEAD", "POST"])
@tenant_admin_page
def pool_delete_confirm(request, pk):
    """GET: what deleting the pool does, with its desktops and live sessions; POST: do it."""
    pool = admin_pool(request, pk)
    if request.method == "POST":
        try:
            pool_delete(pool=pool, actor=request.user)
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Pool “{pool.name}” is being deleted: its sessions have "
                                      f"ended and its desktops are being removed.")
        return pools_redirect(request)
    live_sessions = session_list_for_user(user=request.user, is_admin=True).filter(
        pool=pool, state__in=LIVE_SESSION_STATES).count()
    return render(request, "portal/pools/delete.html",
                  {"pool": pool, "live_sessions": live_sessions})
