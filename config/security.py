"""Login lockout (django-axes) and the Content-Security-Policy of our pages (django-csp)."""

from __future__ import annotations

import math

from axes.attempts import get_cool_off_threshold
from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_failure_limit
from axes.models import AccessAttempt
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.db.models import Sum
from django.shortcuts import render

from core.errors import api_error


# --- login lockout ----------------------------------------------------------------------------
class LoginLockoutBackend(AxesStandaloneBackend):
    """Refuses logins for a username and address, or from an address, that failed too often
    (AXES_* settings, ``LoginLockoutHandler``).

    Every login over HTTP passes its request (the portal and admin login forms, the API's
    token view); one without a request (Django's test client, the shell) has no address to
    count against and is left to the next backend instead of failing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


# Set on a request refused because of its address's failures, whatever the username.
ADDRESS_LOCKED_OUT = "vdi_address_locked_out"


class LoginLockoutHandler(AxesDatabaseHandler):
    """axes' database handler with a second, higher limit per address.

    axes counts failures per username and address (AXES_LOCKOUT_PARAMETERS) against one
    limit (AXES_FAILURE_LIMIT). Password spraying stays under it, a few guesses at each of
    many usernames, so the failures of one address are also added up across usernames,
    over axes' own records of the cool-off, against VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS.
    axes asks ``get_failures`` both before a login (locked out already?) and after a
    failure (locked out now?): past the address limit it answers at least axes' limit, so
    axes locks out in both places, with its usual answer (``lockout_response``). A
    successful login clears its own username's failures there, not the other usernames'.
    """

    def get_failures(self, request, credentials=None) -> int:
        failures = super().get_failures(request, credentials)
        limit = settings.VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS
        if limit and self.address_failures(request) >= limit:
            setattr(request, ADDRESS_LOCKED_OUT, True)
            return max(failures, get_failure_limit(request, credentials))
        return failures

    @staticmethod
    def address_failures(request) -> int:
        attempts = AccessAttempt.objects.filter(ip_address=request.axes_ip_address)
        if settings.AXES_COOLOFF_TIME is not None:
            attempts = attempts.filter(attempt_time__gte=get_cool_off_threshold(request))
        return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0


def lockout_response(request, original_response=None, credentials=None):
    """A locked-out login: 429 with Retry-After; JSON in the API's error shape under
    /api/, else the portal's lockout page."""
    retry_after = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds())
    minutes = max(1, math.ceil(retry_after / 60))
    whom = ("from your address" if getattr(request, ADDRESS_LOCKED_OUT, False)
            else "for this account from your address")
    message = (f"Too many failed logins {whom}. Try again in "
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
