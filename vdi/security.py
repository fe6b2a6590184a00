"""Login lockout (django-axes) and the Content-Security-Policy of our pages (django-csp)."""

from __future__ import annotations

import functools
import math
from urllib.parse import urlsplit

from axes.backends import AxesStandaloneBackend
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.shortcuts import render

from .errorpages import api_error


# --- login lockout ----------------------------------------------------------------------------
class LoginLockoutBackend(AxesStandaloneBackend):
    """Refuses logins for a username and address that failed too often (AXES_* settings).

    Every login over HTTP passes its request (the portal and admin login forms, the API's
    token view); one without a request (Django's test client, the shell) has no address to
    count against and is left to the next backend instead of failing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_response(request, original_response=None, credentials=None):
    """A locked-out login: 429 with Retry-After; JSON in the API's error shape under
    /api/, else the portal's lockout page."""
    retry_after = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds())
    minutes = max(1, math.ceil(retry_after / 60))
    message = (f"Too many failed logins for this account from your address. Try again in "
               f"{minutes} minute{'s' if minutes != 1 else ''}.")
    status = settings.AXES_HTTP_RESPONSE_CODE
    response = (api_error(request, status, "login_locked_out", message,
                          {"retry_after": retry_after})
                or render(request, "registration/locked_out.html", {"message": message},
                          status=status))
    response["Retry-After"] = str(retry_after)
    return response


# --- Content-Security-Policy ------------------------------------------------------------------
# Pages we don't write whose templates carry an inline <style>: Django admin's change lists,
# and Swagger UI's page (its scripts are separate files: SpectacularSwaggerSplitView). Only
# their styles are relaxed; scripts stay 'self' everywhere.
INLINE_STYLE_PREFIXES = ("/admin/", "/api/docs/")


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def process_response(self, request, response):
        if request.path.startswith(INLINE_STYLE_PREFIXES):
            update = dict(getattr(response, "_csp_update", None) or {})
            update["style-src"] = [*update.get("style-src", []), "'unsafe-inline'"]
            response._csp_update = update
        return super().process_response(request, response)


def websocket_origin(url: str) -> str:
    """ws(s)://host[:port] of a websocket URL: the CSP source that lets a page dial it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def csp_allows_console_proxy(view):
    """The browser console page's websocket goes to the console proxies, on another port
    or host than the portal: its connect-src names them."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        from brokers.views import console_proxy_url

        response = view(request, *args, **kwargs)
        update = dict(getattr(response, "_csp_update", None) or {})
        update["connect-src"] = [*update.get("connect-src", []),
                                 websocket_origin(console_proxy_url(request))]
        response._csp_update = update
        return response

    return wrapper
