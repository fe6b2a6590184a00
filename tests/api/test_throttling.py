"""Throttling (SPEC §4: 429 throttled): per user, per client address, per login and per
tenant, each answered with the error envelope and a ``Retry-After`` in whole seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from rest_framework.test import APIClient

from tests.conftest import PASSWORD
from core.api import throttling

from .test_slice import assert_error

ROOT = Path(__file__).resolve().parents[2]
OFF = {"user": None, "anon": None, "login": None, "tenant": None}


def clear_throttle_history():
    """Forget every throttle's history (only theirs: with Redis the cache may share its
    database with the Celery broker, which a plain ``cache.clear()`` would flush)."""
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=cache.make_key("throttle_*")))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


class Clock:
    """The throttles' clock, moved by hand."""

    def __init__(self):
        self.now = 1_000_040.0  # 20 s into a minute

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    for cls in (throttling.UserRateThrottle, throttling.AnonRateThrottle,
                throttling.LoginRateThrottle, throttling.TenantRateThrottle):
        monkeypatch.setattr(cls, "timer", fake)
    return fake


@pytest.fixture
def rates(settings):
    """``rates(user="3/min", ...)``: turn throttles on at these rates (the test profile has
    them off). DRF reads its rates once, at import; ours read the live settings."""
    clear_throttle_history()

    def set_rates(**given):
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                                   "DEFAULT_THROTTLE_RATES": {**OFF, **given}}

    yield set_rates
    clear_throttle_history()


def assert_throttled(response, *, at_most=60):
    error = assert_error(response, 429, "throttled")
    retry_after = response["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= at_most, retry_after
    assert error["details"]["retry_after"] == int(retry_after)
    return int(retry_after)


def login(client, username, password=PASSWORD):
    return client.post("/api/v1/auth/token/", {"username": username, "password": password},
                       format="json")


# --- per user -----------------------------------------------------------------------------
def test_a_user_over_their_rate_gets_429_with_retry_after(api, rates, tenant):
    member, admin = api("member"), api("admin")  # logged in before the throttles are on
    rates(user="3/min")
    for _ in range(3):
        assert member.get("/api/v1/tenants/acme/pools/").status_code == 200
    assert_throttled(member.get("/api/v1/tenants/acme/pools/"))
    assert_throttled(member.get("/api/v1/tenants/"))  # every endpoint: the budget is the user's
    assert admin.get("/api/v1/tenants/acme/pools/").status_code == 200  # others are not


def test_retry_after_is_when_a_request_is_allowed_again(api, rates, clock, tenant):
    member = api("member")
    rates(user="2/min")
    assert member.get("/api/v1/tenants/").status_code == 200
    clock.now += 10
    assert member.get("/api/v1/tenants/").status_code == 200
    clock.now += 10
    assert assert_throttled(member.get("/api/v1/tenants/")) == 40  # the first leaves the window
    clock.now += 39
    assert_throttled(member.get("/api/v1/tenants/"))
    clock.now += 1.5
    assert member.get("/api/v1/tenants/").status_code == 200


def test_rates_take_effect_when_the_settings_change(api, rates, tenant):
    member = api("member")
    rates(user="1/min")
    member.get("/api/v1/tenants/")
    assert_throttled(member.get("/api/v1/tenants/"))
    rates(user="100/min")
    assert member.get("/api/v1/tenants/").status_code == 200
    rates()  # off
    for _ in range(3):
        assert member.get("/api/v1/tenants/").status_code == 200


# --- anonymous and login ------------------------------------------------------------------
def test_anonymous_requests_are_throttled_per_client_address(rates, users):
    rates(anon="2/min")
    here = APIClient(REMOTE_ADDR="192.0.2.1")
    for name in ("a", "b"):
        assert_error(login(here, name, "wrong"), 400, "invalid_credentials")
    assert_throttled(login(here, "c", "wrong"))
    # A forged X-Forwarded-For does not make a new client (VDI_THROTTLE_NUM_PROXIES is 0).
    forged = here.post("/api/v1/auth/token/", {"username": "e", "password": "x"},
                       format="json", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert_throttled(forged)
    elsewhere = APIClient(REMOTE_ADDR="192.0.2.2")
    assert login(elsewhere, "member").status_code == 200


def test_login_is_throttled_per_address_and_username(rates, users):
    rates(login="2/min")
    here = APIClient(REMOTE_ADDR="192.0.2.1")
    assert_error(login(here, "member", "wrong"), 400, "invalid_credentials")
    assert_error(login(here, "MEMBER", "wrong"), 400, "invalid_credentials")
    # Even the right password waits: guesses can't be made faster than the rate.
    assert_throttled(login(here, "member"))
    assert login(here, "admin").status_code == 200
    assert login(APIClient(REMOTE_ADDR="192.0.2.2"), "member").status_code == 200


def test_a_login_body_that_does_not_parse_is_still_a_400(rates, users):
    rates(login="5/min", anon="5/min")
    response = APIClient().post("/api/v1/auth/token/", data="{nope",
                                content_type="application/json")
    assert_error(response, 400, "parse_error")


# --- per tenant ---------------------------------------------------------------------------
def test_a_tenant_shares_one_budget_among_its_members(api, rates, clock, users, tenant,
                                                      other_tenant):
    owner, admin, member = api("owner"), api("admin"), api("member")
    outsider, staff = api("outsider"), api("staff")
    rates(tenant="3/min", user="100/min")
    assert admin.get("/api/v1/tenants/acme/pools/").status_code == 200
    assert member.get("/api/v1/tenants/acme/desktops/").status_code == 200
    assert owner.get("/api/v1/tenants/acme/members/").status_code == 200
    retry_after = assert_throttled(member.get("/api/v1/tenants/acme/sessions/"))
    assert retry_after == 40  # the window (a minute) ends in 40 s
    assert_throttled(owner.get("/api/v1/tenants/acme/operations/"))
    # Platform routes are not the tenant's, and other tenants have budgets of their own.
    assert member.get("/api/v1/tenants/").status_code == 200
    for _ in range(3):
        assert outsider.get("/api/v1/tenants/globex/pools/").status_code == 200
    # Platform staff acting in the tenant are not counted against it (nor stopped by it).
    assert staff.get("/api/v1/tenants/acme/pools/").status_code == 200
    clock.now += retry_after
    assert member.get("/api/v1/tenants/acme/sessions/").status_code == 200


def test_a_non_member_neither_spends_a_tenants_budget_nor_learns_it_exists(api, rates,
                                                                           tenant, users):
    member, outsider = api("member"), api("outsider")
    rates(tenant="2/min", user="100/min")
    for _ in range(5):
        assert_error(outsider.get("/api/v1/tenants/acme/pools/"), 404)
        assert_error(outsider.get("/api/v1/tenants/nope/pools/"), 404)
    assert member.get("/api/v1/tenants/acme/pools/").status_code == 200
    assert member.get("/api/v1/tenants/acme/pools/").status_code == 200
    assert_throttled(member.get("/api/v1/tenants/acme/pools/"))
    assert_error(outsider.get("/api/v1/tenants/acme/pools/"), 404)  # still not a 429


def test_a_throttled_write_leaves_no_idempotency_record(api, rates, image, tenant):
    admin = api("admin")
    rates(tenant="1/min", user="100/min")
    admin.get("/api/v1/tenants/acme/pools/")
    body = {"name": "Later", "image": str(image.id)}
    key = {"HTTP_IDEMPOTENCY_KEY": "k-1"}
    assert_throttled(admin.post("/api/v1/tenants/acme/pools/", body, format="json", **key))
    rates(user="100/min")
    response = admin.post("/api/v1/tenants/acme/pools/", body, format="json", **key)
    assert response.status_code == 201, response.content


# --- robustness ---------------------------------------------------------------------------
def test_a_cache_outage_lets_requests_through(api, rates, monkeypatch, tenant):
    member = api("member")
    rates(user="1/min", tenant="1/min")

    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    for method in ("get", "add", "incr"):
        monkeypatch.setattr(throttling.UserRateThrottle.cache, method, broken)
    for _ in range(3):
        assert member.get("/api/v1/tenants/acme/pools/").status_code == 200


@pytest.mark.parametrize("env,ok", [
    ({"VDI_THROTTLE_USER": "lots"}, False),
    ({"VDI_THROTTLE_TENANT": "100/fortnight"}, False),
    ({"VDI_THROTTLE_USER": "120/min", "VDI_THROTTLE_LOGIN": ""}, True),
])
def test_throttle_rates_from_the_environment_are_checked(tmp_path, env, ok):
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL"}}
    clean.update(VDI_ENV="demo", VDI_DATA_DIR=str(tmp_path), **env)
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings"})
    if ok:
        assert result.returncode == 0, result.stderr
        assert "'user': '120/min'" in result.stdout and "'login': None" in result.stdout
        assert "'tenant': '3000/min'" in result.stdout  # the demo's default
    else:
        assert result.returncode != 0 and "must look like 600/min" in result.stderr
