"""Contract: the tenant's usage of a month (owners and admins; one object, not a list)."""

import pytest

from tests.api.contract import ROLES, TENANT_ADMINS, assert_refused, client_for
from tests.api.test_slice import assert_error

USAGE_FIELDS = {"month", "desktop_hours", "session_hours", "vcpu_hours", "memory_gb_hours",
                "peak_sessions", "complete", "computed_at"}


@pytest.mark.parametrize("role", ROLES)
def test_usage(role, api, users):
    response = client_for(api, role).get("/api/v1/tenants/acme/usage/", {"month": "2026-01"})
    if role not in TENANT_ADMINS:
        assert_refused(response, {"anonymous": 401, "member": 403, "outsider": 404}[role])
        return
    assert response.status_code == 200, response.content
    body = response.json()
    assert USAGE_FIELDS <= set(body) and body["month"] == "2026-01", body


def test_a_malformed_month_is_a_400(api, users):
    response = api("admin").get("/api/v1/tenants/acme/usage/", {"month": "January"})
    assert "month" in assert_error(response, 400, "invalid")["details"]
