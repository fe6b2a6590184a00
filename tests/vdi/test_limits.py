"""Platform limits: ticket lifetimes within 10-600 s, and a maximum pool size, so that one
tenant's pool cannot take every host."""

from __future__ import annotations

import pytest

from tests.api.test_slice import assert_error
from tests.config.test_settings import run_check
from tests.vdi.test_portal_pools import NEW, form_data, pools  # noqa: F401 (a fixture)

POOLS = "/api/v1/tenants/acme/pools/"


@pytest.fixture
def pool_max(settings):
    settings.VDI = {**settings.VDI, "POOL_MAX_DESKTOPS": 4}
    return 4


def body(image, **fields):
    return {"name": "Office", "image": str(image.id), "memory_mb": 256, "max_desktops": 3,
            **fields}


@pytest.mark.parametrize("ttl", [10, 600])
def test_ticket_lifetimes_at_the_bounds_are_taken(api, image, ttl):
    response = api("admin").post(POOLS, body(image, ticket_ttl_s=ttl), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["ticket_ttl_s"] == ttl


@pytest.mark.parametrize("ttl", [0, 9, 601, 3600])
def test_ticket_lifetimes_out_of_bounds_are_refused(api, image, ttl):
    error = assert_error(api("admin").post(POOLS, body(image, ticket_ttl_s=ttl), format="json"),
                         400)
    assert "ticket_ttl_s" in error["details"]
    assert pools() == []


def test_a_pool_may_not_outgrow_the_platform(api, image, pool_max):
    error = assert_error(api("admin").post(POOLS, body(image, max_desktops=pool_max + 1),
                                           format="json"), 400)
    assert error["details"]["max_desktops"] == [
        f"The platform allows at most {pool_max} desktops per pool."]
    assert pools() == []
    created = api("admin").post(POOLS, body(image, max_desktops=pool_max), format="json")
    assert created.status_code == 201, created.content


def test_resizing_past_the_platform_maximum_changes_nothing(api, make_pool, pool_max):
    pool = make_pool(max_desktops=2)
    response = api("admin").patch(f"{POOLS}{pool.id}/", {"max_desktops": 50}, format="json")
    assert_error(response, 400)
    pool.refresh_from_db()
    assert pool.max_desktops == 2


def test_the_portal_form_says_so(logged_in, form_data, pool_max):  # noqa: F811
    response = logged_in("admin").post(NEW, form_data(max_desktops=str(pool_max + 1)))
    html = response.content.decode()
    assert response.status_code == 200 and f"at most {pool_max} desktops per pool" in html
    assert pools() == []


@pytest.mark.parametrize("value, message", [
    ("5", "VDI_TICKET_TTL_S must be between 10 and 600, not 5"),
    ("601", "VDI_TICKET_TTL_S must be between 10 and 600, not 601"),
    ("two minutes", "VDI_TICKET_TTL_S must be a whole number"),
])
def test_a_platform_ticket_lifetime_out_of_bounds_stops_the_start(tmp_path, value, message):
    result = run_check(tmp_path, VDI_ENV="test", VDI_TICKET_TTL_S=value)
    assert result.returncode != 0 and message in result.stderr


def test_the_platform_pool_maximum_must_be_a_positive_number(tmp_path):
    result = run_check(tmp_path, VDI_ENV="test", VDI_POOL_MAX_DESKTOPS="0")
    assert result.returncode != 0 and "VDI_POOL_MAX_DESKTOPS must be between 1" in result.stderr
    assert run_check(tmp_path, VDI_ENV="test", VDI_TICKET_TTL_S="600").returncode == 0
