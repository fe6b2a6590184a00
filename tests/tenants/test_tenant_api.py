"""An organisation's lifecycle through the API: staff change it (name, quotas, status) and
suspend or resume it with the admin action's effects; its owners rename it; new ones start
with the platform's default quotas."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from brokers.models import Session
from tenants import events
from tenants.models import AuditEvent, Tenant
from tenants.scoping import scopes_disabled
from tenants.services import tenant_create
from tests.api.test_slice import assert_error
from config import settings as project_settings

ACME = "/api/v1/tenants/acme/"
QUOTAS = ("max_desktops", "max_vcpus", "max_memory_mb", "max_sessions")


def acme() -> Tenant:
    return Tenant.objects.get(slug="acme")


def snapshot() -> dict:
    row = Tenant.objects.filter(slug="acme").values().get()
    return {key: value for key, value in row.items()}


def trail(action=None, **filters) -> list[AuditEvent]:
    with scopes_disabled():
        entries = AuditEvent.objects.filter(tenant__slug="acme", action__startswith="tenant.",
                                            **filters)
        if action:
            entries = entries.filter(action=action)
        return list(entries.exclude(action="tenant.create").order_by("created_at"))


@pytest.fixture
def suspensions():
    """What ``tenant_suspended`` told its receivers, and whether it was in a transaction."""
    heard = []

    def receiver(sender, **kwargs):
        heard.append({**kwargs, "in_transaction": connection.in_atomic_block})

    events.tenant_suspended.connect(receiver, dispatch_uid="test-suspensions")
    yield heard
    events.tenant_suspended.disconnect(dispatch_uid="test-suspensions")


@pytest.fixture
def live_session(api, make_pool, host, run_tasks, users):
    """The member's live session on a running desktop."""
    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks():
        body = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    return pool, body["session"]


# --- staff change an organisation ------------------------------------------------------------
def test_staff_change_the_name_and_quotas(api, users, tenant):
    response = api("staff").patch(ACME, {"name": "Acme Corporation", "max_desktops": 5,
                                         "max_sessions": 3}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["max_desktops"], body["max_sessions"], body["slug"]) == (
        "Acme Corporation", 5, 3, "acme")
    assert api("member").get(ACME).json()["name"] == "Acme Corporation"
    [entry] = trail("tenant.update")
    assert (entry.result, entry.actor, entry.source) == ("ok", users["staff"], "api")
    assert entry.details == {"changed": {"name": ["Acme", "Acme Corporation"],
                                         "max_desktops": [None, 5], "max_sessions": [None, 3]}}

    # null is unlimited; sending what it already is changes (and records) nothing.
    unlimited = api("staff").patch(ACME, {"max_desktops": None}, format="json")
    assert unlimited.status_code == 200 and unlimited.json()["max_desktops"] is None
    assert api("staff").patch(ACME, {"name": "Acme Corporation"},
                              format="json").status_code == 200
    assert len(trail("tenant.update")) == 2


def test_staff_suspend_through_patch_with_the_admin_actions_effects(api, users, tenant,
                                                                    live_session, suspensions):
    pool, session_id = live_session

    response = api("staff").patch(ACME, {"status": "suspended", "max_vcpus": 8}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["max_vcpus"]) == ("suspended", 8)
    with scopes_disabled():
        session = Session.objects.get(pk=session_id)
    assert (session.state, session.end_reason) == ("ended", "admin")
    [heard] = suspensions
    assert (heard["tenant"], heard["actor"], heard["in_transaction"]) == (
        acme(), users["staff"], True)
    assert [e.action for e in trail()] == ["tenant.suspended", "tenant.update"]
    assert trail("tenant.suspended")[0].details == {"from": "active", "to": "suspended"}
    assert trail("tenant.update")[0].details == {"changed": {"max_vcpus": [None, 8]}}
    assert_error(api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/"), 409,
                 "tenant_suspended")

    resumed = api("staff").patch(ACME, {"status": "active"}, format="json")
    assert resumed.status_code == 200 and acme().is_active
    assert len(suspensions) == 1 and trail("tenant.active")


def test_suspend_and_resume_actions(api, users, tenant, live_session, suspensions):
    pool, session_id = live_session
    staff = api("staff")

    response = staff.post(ACME + "suspend/")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "suspended"
    with scopes_disabled():
        assert Session.objects.get(pk=session_id).state == "ended"
    assert staff.post(ACME + "suspend/").status_code == 200  # already: nothing more happens
    assert len(suspensions) == 1 and len(trail("tenant.suspended")) == 1

    resumed = staff.post(ACME + "resume/")
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert [e.action for e in trail()] == ["tenant.suspended", "tenant.active"]
    assert api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/"
                              ).status_code in (200, 202)


@pytest.mark.parametrize("role,status", [("owner", 403), ("admin", 403), ("member", 403),
                                         ("outsider", 404)])
def test_only_staff_suspend_or_resume(api, users, tenant, role, status, suspensions):
    before = snapshot()
    assert_error(api(role).post(ACME + "suspend/"), status)
    Tenant.objects.filter(slug="acme").update(status="suspended")
    assert_error(api(role).post(ACME + "resume/"), status)
    assert snapshot() == {**before, "status": "suspended"} and suspensions == []
    if status == 403:  # a refusal the organisation's trail keeps
        assert [e.result for e in trail()] == ["denied", "denied"]


# --- owners rename theirs; nobody else in it changes anything --------------------------------
def test_an_owner_renames_their_organisation(api, users, tenant):
    response = api("owner").patch(ACME, {"name": "Acme Ltd"}, format="json")
    assert response.status_code == 200, response.content
    assert acme().name == "Acme Ltd"
    [entry] = trail("tenant.update")
    assert entry.actor == users["owner"] and entry.details["changed"] == {
        "name": ["Acme", "Acme Ltd"]}


@pytest.mark.parametrize("body", [
    {"max_desktops": 1000}, {"status": "suspended"}, {"name": "Acme Ltd", "max_sessions": 9},
    {"max_vcpus": None},
])
def test_an_owner_may_not_change_quotas_or_status(api, users, tenant, body, suspensions):
    before = snapshot()
    response = api("owner").patch(ACME, body, format="json")
    assert_error(response, 403, "permission_denied")
    assert snapshot() == before and suspensions == []
    [entry] = trail()
    assert (entry.action, entry.result) == ("tenant.update", "denied")


@pytest.mark.parametrize("role,status", [("admin", 403), ("member", 403), ("outsider", 404),
                                         (None, 401)])
def test_nobody_else_renames_it(api, users, tenant, role, status):
    before = snapshot()
    assert_error(api(role).patch(ACME, {"name": "Mine now"}, format="json"), status)
    assert snapshot() == before


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body,field", [
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "Acme\nInc"}, "name"),
    ({"max_desktops": -1}, "max_desktops"),
    ({"max_vcpus": "many"}, "max_vcpus"),
    ({"max_memory_mb": 2 ** 40}, "max_memory_mb"),
    ({"status": "deleted"}, "status"),
    ({"slug": "acme2"}, "slug"),
    ({"id": "00000000-0000-4000-8000-000000000000"}, "id"),
    ({"name": "Fine", "max_sessions": -5}, "max_sessions"),
])
def test_bad_input_is_a_400_and_changes_nothing(api, users, tenant, body, field, suspensions):
    before = snapshot()
    response = api("staff").patch(ACME, body, format="json")
    error = assert_error(response, 400, "invalid")
    assert field in error["details"], error
    assert snapshot() == before and suspensions == []
    assert all(e.result == "rejected" for e in trail())


def test_a_body_that_is_not_an_object_is_a_400(api, users, tenant):
    before = snapshot()
    assert_error(api("staff").patch(ACME, ["name"], format="json"), 400)
    assert snapshot() == before


def test_put_is_not_offered(api, users, tenant):
    assert_error(api("staff").put(ACME, {"name": "Acme"}, format="json"), 405)


# --- default quotas ----------------------------------------------------------------------------
DEFAULTS = {"max_desktops": 50, "max_vcpus": 100, "max_memory_mb": 204800, "max_sessions": 50}


@pytest.fixture
def platform_defaults():
    with override_settings(VDI={**settings.VDI, "DEFAULT_TENANT_QUOTAS": DEFAULTS}):
        yield DEFAULTS


def quotas_of(tenant) -> dict:
    return {quota: getattr(tenant, quota) for quota in QUOTAS}


def test_a_new_organisation_gets_the_platform_defaults_unless_given(db, platform_defaults):
    assert quotas_of(tenant_create(slug="initech", name="Initech")) == DEFAULTS
    given = tenant_create(slug="hooli", name="Hooli", max_desktops=5, max_sessions=None)
    assert quotas_of(given) == {**DEFAULTS, "max_desktops": 5, "max_sessions": None}


def test_staff_create_with_defaults_or_explicit_quotas_through_the_api(api, users,
                                                                       platform_defaults):
    staff = api("staff")
    plain = staff.post("/api/v1/tenants/", {"slug": "initech", "name": "Initech"},
                       format="json")
    assert plain.status_code == 201, plain.content
    assert {quota: plain.json()[quota] for quota in QUOTAS} == DEFAULTS
    unlimited = staff.post("/api/v1/tenants/", {"slug": "hooli", "name": "Hooli",
                                                "max_vcpus": None, "max_desktops": 7},
                           format="json")
    assert unlimited.status_code == 201, unlimited.content
    assert quotas_of(Tenant.objects.get(slug="hooli")) == {**DEFAULTS, "max_vcpus": None,
                                                           "max_desktops": 7}


def test_the_admin_form_starts_with_the_defaults(admin_client, platform_defaults):
    html = admin_client.get("/admin/tenants/tenant/add/").content.decode()
    assert 'name="max_memory_mb" value="204800"' in html


def test_the_test_profile_keeps_new_organisations_unlimited(tenant):
    assert quotas_of(tenant) == dict.fromkeys(QUOTAS)


@pytest.mark.parametrize("raw,development,expected", [
    (None, False, 50), (None, True, None), ("", False, None), ("12", False, 12),
    (" 0 ", True, 0),
])
def test_default_quota_settings_are_read_from_the_environment(monkeypatch, raw, development,
                                                              expected):
    name = "VDI_DEFAULT_TENANT_MAX_DESKTOPS"
    if raw is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, raw)
    monkeypatch.setattr(project_settings, "DEVELOPMENT", development)
    assert project_settings._default_quota(name, 50) == expected


@pytest.mark.parametrize("raw", ["-1", "lots", "1.5"])
def test_a_bad_default_quota_stops_the_start(monkeypatch, raw):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("VDI_DEFAULT_TENANT_MAX_VCPUS", raw)
    with pytest.raises(ImproperlyConfigured, match="VDI_DEFAULT_TENANT_MAX_VCPUS"):
        project_settings._default_quota("VDI_DEFAULT_TENANT_MAX_VCPUS", 100)
