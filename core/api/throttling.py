"""Request throttling (SPEC §4: 429 throttled, with ``Retry-After``).

- ``user``: each signed-in user (``VDI_THROTTLE_USER``, default 600/min);
- ``anon``: each client address, for requests without credentials: the token login, the
  schema (``VDI_THROTTLE_ANON``, default 60/min);
- ``login``: ``auth/token/`` per client address and username (``VDI_THROTTLE_LOGIN``,
  default 10/min), so one account's password can't be guessed quickly from one place;
- ``tenant``: all members of one organisation together, on its ``tenants/{slug}/…`` routes
  (``VDI_THROTTLE_TENANT``, default 3000/min). It is checked after the tenant is resolved,
  so a non-member (who gets 404) never spends an organisation's budget nor learns from a 429
  that the slug exists; platform staff acting in a tenant are not counted.

Rates are read from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` on every request (DRF
reads them once, at import), so ``override_settings`` takes effect; a rate of ``None``
turns that throttle off (the test profile's default). Request history lives in the Django
cache: Redis when ``REDIS_URL`` is set, else the per-process local-memory cache. If the cache
fails, requests are let through rather than refused.
"""

from __future__ import annotations

import hashlib
import logging
import math

from rest_framework import throttling
from rest_framework.exceptions import APIException
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


class SettingsRateMixin:
    """Rates from the live settings, an integer ``wait``, and fail-open on cache errors."""

    def get_rate(self):
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        return rates.get(self.scope)

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except APIException:  # e.g. a login body that does not parse: the view says so
            raise
        except Exception:  # a cache outage must not take the API down with it
            logger.warning("throttle %s: cache unavailable, request let through", self.scope,
                           exc_info=True)
            return True

    def wait(self):
        """Whole seconds until this client may make a request again (at least 1): when the
        oldest request that still fills the window leaves it."""
        if not self.num_requests:  # a rate of 0: nothing is ever let through
            return self.duration
        if len(self.history) < self.num_requests:
            return 1
        frees_at = self.history[self.num_requests - 1] + self.duration
        return max(1, math.ceil(frees_at - self.now))


class UserRateThrottle(SettingsRateMixin, throttling.UserRateThrottle):
    scope = "user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None  # the anon throttle's
        return super().get_cache_key(request, view)


class AnonRateThrottle(SettingsRateMixin, throttling.AnonRateThrottle):
    scope = "anon"


class LoginRateThrottle(SettingsRateMixin, throttling.SimpleRateThrottle):
    """``auth/token/``: per client address and username (case-insensitive)."""

    scope = "login"

    def get_cache_key(self, request, view):
        data = request.data
        username = data.get("username", "") if hasattr(data, "get") else ""
        digest = hashlib.sha256(str(username).strip().lower().encode()).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope,
                                    "ident": f"{self.get_ident(request)}_{digest}"}


class TenantRateThrottle(SettingsRateMixin, throttling.SimpleRateThrottle):
    """One budget per organisation, shared by its members: a fixed window counted with the
    cache's atomic ``incr`` (a busy tenant's key is shared by many concurrent requests, where
    DRF's read-modify-write history would lose counts and grow with the rate)."""

    scope = "tenant"

    def get_cache_key(self, request, view):
        access = getattr(view, "access", None)
        if access is None or access.role is None:  # not resolved, or platform staff
            return None
        return self.cache_format % {"scope": self.scope, "ident": access.tenant.pk}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends_at = (window + 1) * self.duration
        key = f"{key}_{window}"
        try:
            if self.cache.add(key, 1, self.duration + 1):
                count = 1
            else:
                try:
                    count = self.cache.incr(key)
                except ValueError:  # expired between add and incr
                    self.cache.add(key, 1, self.duration + 1)
                    count = 1
        except Exception:
            logger.warning("throttle %s: cache unavailable, request let through", self.scope,
                           exc_info=True)
            return True
        return count <= self.num_requests

    def wait(self):
        return max(1, math.ceil(self.window_ends_at - self.now))


class TenantThrottleMixin:
    """For views under ``tenants/{slug}/`` (placed before ``TenantScopedMixin``): after the
    tenant is resolved, its shared budget is checked."""

    tenant_throttle_classes = (TenantRateThrottle,)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        waits = [throttle.wait() for throttle in (cls() for cls in self.tenant_throttle_classes)
                 if not throttle.allow_request(request, self)]
        if waits:
            self.throttled(request, max(waits))
