"""The foundation slice through the REST API: pool → spares → connect → ticket → .vv."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from brokers.models import Session
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add
from vdi.models import Desktop, Image, Pool

TICKET_FIELDS = {"session", "desktop", "state", "protocol", "host", "port", "tls_port",
                 "password", "expires_at", "vv_url", "console_url"}


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def session_count():
    with scopes_disabled():
        return Session.objects.count()


@pytest.fixture
def ready_pool(make_pool, host, run_tasks):
    with run_tasks():
        return make_pool(min_ready=2)


def connect(client, pool, run_tasks, tenant="acme"):
    with run_tasks():
        return client.post(f"/api/v1/tenants/{tenant}/pools/{pool.id}/connect/")


# --- auth ---------------------------------------------------------------------------------
def test_token_login_and_bad_credentials(api, users):
    client = api()
    bad = client.post("/api/v1/auth/token/", {"username": "member", "password": "nope"},
                      format="json")
    assert_error(bad, 400, "invalid_credentials")
    missing = client.post("/api/v1/auth/token/", {"username": "member"}, format="json")
    assert "password" in assert_error(missing, 400, "invalid")["details"]
    member = api("member")
    assert member.get("/api/v1/tenants/").status_code == 200


def test_anonymous_gets_401_with_the_envelope(api, tenant):
    assert_error(api().get("/api/v1/tenants/acme/pools/"), 401)


# --- pools --------------------------------------------------------------------------------
def test_admin_creates_a_pool_and_spares_are_provisioned(api, image, host, tenant, run_tasks):
    with run_tasks():
        response = api("admin").post("/api/v1/tenants/acme/pools/", {
            "name": "Engineering", "image": str(image.id), "min_ready": 2, "max_desktops": 4,
            "memory_mb": 256, "protocol": "vnc",
        }, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Engineering" and body["kind"] == "floating"
    with tenant_scope(tenant):
        assert Desktop.objects.filter(pool_id=body["id"], state="running").count() == 2


@pytest.mark.parametrize("role,status", [("member", 403), ("outsider", 404), (None, 401)])
def test_only_tenant_admins_create_pools(api, image, tenant, role, status):
    response = api(role).post("/api/v1/tenants/acme/pools/",
                              {"name": "X", "image": str(image.id)}, format="json")
    assert_error(response, status)
    with scopes_disabled():
        assert not Pool.objects.filter(name="X").exists()


def test_bad_pool_input_is_a_400_with_field_details_and_changes_nothing(
    api, image, tenant, other_tenant
):
    with scopes_disabled():
        foreign = Image.objects.create(tenant=other_tenant, name="theirs", base_volume="t.qcow2")
    admin = api("admin")
    cases = [
        ({"name": "A", "image": str(foreign.id)}, "image"),
        ({"name": "A", "image": "not-a-uuid"}, "image"),
        ({"name": "A", "image": str(image.id), "kind": "weird"}, "kind"),
        ({"name": "A" * 500, "image": str(image.id)}, "name"),
        ({"name": "A", "image": str(image.id), "min_ready": 5, "max_desktops": 2},
         "max_desktops"),
        ({"image": str(image.id)}, "name"),
    ]
    for payload, field in cases:
        error = assert_error(admin.post("/api/v1/tenants/acme/pools/", payload, format="json"),
                             400, "invalid")
        assert field in error["details"], (payload, error)
    with scopes_disabled():
        assert Pool.objects.count() == 0


def test_malformed_json_is_a_400(api, tenant):
    response = api("admin").post("/api/v1/tenants/acme/pools/", data="{not json",
                                 content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_duplicate_pool_name_is_a_400(api, make_pool, image):
    make_pool(name="Office")
    response = api("admin").post("/api/v1/tenants/acme/pools/",
                                 {"name": "Office", "image": str(image.id)}, format="json")
    assert_error(response, 400, "invalid")


def test_members_see_only_pools_they_are_entitled_to(api, make_pool, users, tenant):
    make_pool(name="Open")
    restricted = make_pool(name="Restricted", entitle_all_members=False)
    names = [p["name"] for p in api("member").get("/api/v1/tenants/acme/pools/").json()["results"]]
    assert names == ["Open"]
    assert len(api("admin").get("/api/v1/tenants/acme/pools/").json()["results"]) == 2
    response = api("member").post(f"/api/v1/tenants/acme/pools/{restricted.id}/connect/")
    assert_error(response, 404)


def test_other_tenants_and_unknown_ids_are_404(api, ready_pool):
    outsider = api("outsider")
    assert_error(outsider.get("/api/v1/tenants/acme/pools/"), 404)
    assert_error(outsider.post(f"/api/v1/tenants/acme/pools/{ready_pool.id}/connect/"), 404)
    assert_error(outsider.get(f"/api/v1/tenants/globex/pools/{ready_pool.id}/"), 404)
    member = api("member")
    assert_error(member.get("/api/v1/tenants/nope/pools/"), 404)
    assert_error(member.post(f"/api/v1/tenants/acme/pools/{uuid.uuid4()}/connect/"), 404)
    assert_error(member.get("/api/v1/tenants/acme/pools/123/"), 404)
    assert_error(member.get(f"/api/v1/tenants/acme/sessions/{uuid.uuid4()}/"), 404)
    assert session_count() == 0


# --- connect --------------------------------------------------------------------------------
def test_connect_with_a_ready_spare_returns_a_ticket(api, ready_pool, run_tasks, users, tenant):
    response = connect(api("member"), ready_pool, run_tasks)
    assert response.status_code == 200, response.content
    body = response.json()
    assert TICKET_FIELDS <= set(body)
    assert body["state"] == "ready" and body["protocol"] == "spice"
    assert body["host"] == "127.0.0.1" and len(body["password"]) >= 32
    # The simulated host cannot set a console password, and says so.
    assert body["password_applied"] is False and "simulated" in body["notice"]
    with tenant_scope(tenant):
        desktop = Desktop.objects.get(pk=body["desktop"])
        assert desktop.assigned_user == users["member"] and desktop.state == "running"
        ticket = Session.objects.get(pk=body["session"]).tickets.get()
        assert body["password"] not in str(ticket.__dict__)

    assert body["vv_url"] == (f"http://testserver/api/v1/tenants/acme/sessions/"
                              f"{body['session']}/console.vv")
    with run_tasks():
        vv = api("member").get(body["vv_url"])
    assert vv.status_code == 200
    assert vv["Content-Type"] == "application/x-virt-viewer"
    text = vv.content.decode()
    assert text.startswith("[virt-viewer]\n")
    for line in ("type=spice", "host=127.0.0.1", "delete-this-file=1",
                 "toggle-fullscreen=shift+f11", "release-cursor=shift+f12",
                 "secure-attention=ctrl+alt+end"):
        assert line in text.splitlines()
    assert "password=" in text and f"password={body['password']}" not in text  # fresh ticket


def test_connect_twice_reuses_the_session(api, ready_pool, run_tasks):
    member = api("member")
    first = connect(member, ready_pool, run_tasks).json()
    second = connect(member, ready_pool, run_tasks).json()
    assert first["session"] == second["session"] and first["desktop"] == second["desktop"]
    assert first["password"] != second["password"]


def test_two_users_never_get_the_same_desktop(api, ready_pool, run_tasks):
    one = connect(api("member"), ready_pool, run_tasks).json()
    two = connect(api("admin"), ready_pool, run_tasks).json()
    assert one["desktop"] != two["desktop"]


def test_connect_without_a_spare_is_pending_then_ready(api, make_pool, host, run_tasks, tenant):
    pool = make_pool(min_ready=0)
    member = api("member")
    # Enqueued work is held back, as when workers are busy: the answer is 202 pending.
    response = member.post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "pending" and body["retry_after"] > 0 and body["operation"]
    assert response["Retry-After"] == str(body["retry_after"])
    session_url = f"/api/v1/tenants/acme/sessions/{body['session']}/"
    assert member.get(session_url).json()["state"] == "pending"
    assert_error(member.post(session_url + "ticket/"), 409, "session_not_ready")

    from vdi.tasks import operation_run_task

    with run_tasks():
        operation_run_task.delay(body["operation"])
    assert member.get(session_url).json()["state"] == "ready"
    with run_tasks():
        ticket = member.post(session_url + "ticket/")
    assert ticket.status_code == 200 and ticket.json()["session"] == body["session"]


def test_connect_to_a_disabled_pool_is_409(api, make_pool, host):
    pool = make_pool(enabled=False)
    assert_error(api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/"), 409,
                 "pool_disabled")
    assert session_count() == 0


def test_connect_to_a_full_pool_is_409(api, make_pool, host, run_tasks):
    pool = make_pool(min_ready=0, max_desktops=1)
    assert connect(api("member"), pool, run_tasks).status_code in (200, 202)
    assert_error(connect(api("admin"), pool, run_tasks), 409, "pool_exhausted")
    assert session_count() == 1


def test_session_quota_is_409_quota_exceeded(api, ready_pool, run_tasks, tenant):
    tenant.max_sessions = 1
    tenant.save()
    assert connect(api("member"), ready_pool, run_tasks).status_code == 200
    assert_error(connect(api("admin"), ready_pool, run_tasks), 409, "quota_exceeded")
    assert session_count() == 1


def test_suspended_tenant_cannot_connect(api, ready_pool, run_tasks, tenant):
    tenant.status = "suspended"
    tenant.save()
    assert_error(connect(api("member"), ready_pool, run_tasks), 409, "tenant_suspended")


def test_ending_a_session_recycles_the_floating_desktop(api, ready_pool, run_tasks, tenant):
    member = api("member")
    body = connect(member, ready_pool, run_tasks).json()
    with run_tasks():
        ended = member.post(f"/api/v1/tenants/acme/sessions/{body['session']}/end/")
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assert ended.json()["end_reason"] == "user"
    with tenant_scope(tenant):
        desktop = Desktop.objects.get(pk=body["desktop"])
    assert desktop.assigned_user is None and desktop.state == "running"
    assert member.get(f"/api/v1/tenants/acme/sessions/{body['session']}/").json()["state"] == "ended"


def test_sessions_are_private_to_their_user_but_visible_to_admins(
    api, ready_pool, run_tasks, make_user, tenant
):
    body = connect(api("member"), ready_pool, run_tasks).json()
    url = f"/api/v1/tenants/acme/sessions/{body['session']}/"
    assert api("admin").get(url).status_code == 200
    assert api("owner").get(url).status_code == 200
    membership_add(tenant=tenant, user=make_user("bob"))
    bob = APIClient()
    bob.force_authenticate(user=get_user_model().objects.get(username="bob"))
    assert_error(bob.get(url), 404)
    assert_error(bob.post(url + "ticket/"), 404)
    assert_error(bob.post(url + "end/"), 404)


def test_console_passwords_and_api_tokens_never_reach_the_logs(api, ready_pool, run_tasks,
                                                               caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    member = api("member")
    token = member._credentials["HTTP_AUTHORIZATION"].split()[1]
    body = connect(member, ready_pool, run_tasks).json()
    with run_tasks():
        vv = member.get(body["vv_url"]).content.decode()
    vv_password = next(line for line in vv.splitlines() if line.startswith("password="))[9:]
    logged = caplog.text
    assert "ticket" in logged  # the issue itself is logged...
    assert "console password not set" in logged  # ...and that the simulated host could not
    for secret in (body["password"], vv_password, token):
        assert secret not in logged  # ...never its secret


def test_a_session_whose_desktop_broke_is_ended_and_connect_starts_afresh(
    api, ready_pool, run_tasks, tenant
):
    member = api("member")
    first = connect(member, ready_pool, run_tasks).json()
    with tenant_scope(tenant):
        Desktop.objects.filter(pk=first["desktop"]).update(state="error")
    second = connect(member, ready_pool, run_tasks)
    assert second.status_code == 200, second.content
    assert second.json()["session"] != first["session"]
    assert second.json()["desktop"] != first["desktop"]
    old = member.get(f"/api/v1/tenants/acme/sessions/{first['session']}/").json()
    assert old["state"] == "ended" and old["end_reason"] == "desktop_lost"


def test_staff_create_images_validated_by_the_model(api, tenant):
    staff = api("staff")
    error = assert_error(staff.post("/api/v1/images/", {
        "name": "lab", "base_volume": "lab.qcow2", "boot": "kernel"}, format="json"), 400)
    assert "kernel" in error["details"]
    created = staff.post("/api/v1/images/", {"name": "lab", "base_volume": "lab.qcow2"},
                         format="json")
    assert created.status_code == 201, created.content
    duplicate = staff.post("/api/v1/images/", {"name": "lab", "base_volume": "x.qcow2"},
                           format="json")
    assert_error(duplicate, 400, "invalid")
    assert_error(api("admin").get("/api/v1/images/"), 403)
    with scopes_disabled():
        assert Image.objects.filter(name="lab").count() == 1


def test_unknown_api_paths_are_json_404s_for_every_method(api, users):
    client = api("member")
    for method in ("get", "post", "put", "patch", "delete"):
        response = getattr(client, method)("/api/v1/no-such-thing/")
        assert_error(response, 404, "not_found")


def test_a_token_can_be_revoked(api, users):
    client = api("member")
    assert client.get("/api/v1/tenants/").status_code == 200

    assert client.delete("/api/v1/auth/token/").status_code == 204

    assert_error(client.get("/api/v1/tenants/"), 401)
    assert_error(api().delete("/api/v1/auth/token/"), 401)


def test_an_image_in_use_cannot_be_deleted(api, make_pool, image):
    make_pool()
    staff = api("staff")

    assert_error(staff.delete(f"/api/v1/images/{image.id}/"), 409, "image_in_use")
    unused = staff.post("/api/v1/images/", {"name": "spare", "base_volume": "s.qcow2"},
                        format="json").json()
    assert staff.delete(f"/api/v1/images/{unused['id']}/").status_code == 204
