"""The audit trail: every mutation, through every interface, with how it ended; append-only;
never a secret."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from brokers.choices import TicketKind
from brokers.models import ConnectionTicket, Session
from brokers.services import session_connect, ticket_issue
from tenants.audit import audit_record
from tenants.models import AppendOnlyError, AuditEvent, Membership
from tenants.scoping import TenantScopeError, scopes_disabled, tenant_scope
from tests.api import (test_contract_desktops, test_contract_hosts, test_contract_images,
                       test_contract_members, test_contract_pools, test_contract_sessions,
                       test_contract_tenants)
from tests.api.contract import World
from tests.conftest import PASSWORD
from core import context
from vdi import services
from vdi.services import executors
from core.errors import Conflict
from vdi.models import Desktop, Pool

CONTRACTS = [contract_class() for contract_class in (
    test_contract_hosts.TestHosts, test_contract_images.TestImages,
    test_contract_tenants.TestTenants, test_contract_members.TestMembers,
    test_contract_members.TestInvitations, test_contract_members.TestMyInvitations,
    test_contract_pools.TestPools, test_contract_desktops.TestDesktops,
    test_contract_sessions.TestSessions)]
MUTATING = {"post", "put", "patch", "delete"}
# A GET that changes something: it issues a console ticket.
MUTATING_GETS = {("session-console-vv", "get")}
# Who performs each route in the registry test: the first role the contract allows.
ROLE_PREFERENCE = ("admin", "member", "owner", "staff")


def entries(**filters) -> list[AuditEvent]:
    with scopes_disabled():
        return list(AuditEvent.objects.filter(**filters).select_related("tenant", "actor")
                    .order_by("created_at"))


def of_request(response) -> list[AuditEvent]:
    return entries(request_id=response["X-Request-ID"])


# --- the registry: every mutating API route ---------------------------------------------------
def _patterns(resolver=None):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern)
        elif isinstance(pattern, URLPattern) and getattr(pattern.callback, "cls", None):
            yield pattern


def mutating_api_routes() -> set[tuple[str, str]]:
    """(URL name, method) of every API route that changes something, from the resolver."""
    routes = set()
    for pattern in _patterns():
        cls = pattern.callback.cls
        if ".api." not in cls.__module__:
            continue
        actions = getattr(pattern.callback, "actions", None)  # a viewset's routes
        methods = set(actions) if actions else {m for m in MUTATING if hasattr(cls, m)}
        routes |= {(pattern.name, method) for method in methods & MUTATING}
    return routes | MUTATING_GETS


def _route(url: str, method: str) -> tuple[str, str]:
    return resolve(url.replace("{id}", str(uuid.uuid4()))).url_name, method


def _routed(url: str, method: str) -> bool:
    return method in resolve(url.replace("{id}", str(uuid.uuid4()))).func.actions


def contract_cases() -> dict[tuple[str, str], tuple]:
    """Each mutating route, and the contract (with its data) that exercises it."""
    cases = {}
    for contract in CONTRACTS:
        detail = contract.list_url + "{id}/"
        if "create" in contract.may:
            cases[_route(contract.list_url, "post")] = (contract, "create", None)
        for method in ("put", "patch"):
            if "update" in contract.may and _routed(detail, method):
                cases[_route(detail, method)] = (contract, method, None)
        if "delete" in contract.may:
            cases[_route(detail, "delete")] = (contract, "delete", None)
        for action in contract.actions:
            suffix = action.suffix if action.suffix is not None else f"{action.name}/"
            cases[_route(detail + suffix, action.method)] = (contract, "action", action)
    cases[("auth-token", "post")] = cases[("auth-token", "delete")] = (None, "token", None)
    cases[("api-token-detail", "delete")] = (None, "token", None)
    return cases


CASES = contract_cases()


def test_every_mutating_api_route_is_in_the_registry():
    assert mutating_api_routes() == set(CASES)


def _perform(contract, operation, action, world, api):
    """Do the mutation as the first role allowed; returns (role, response, entry tenant)."""
    may = contract.may.get(operation if operation in ("create", "delete") else "update") \
        if action is None else action.may
    role = next(role for role in ROLE_PREFERENCE if role in may)
    client = api(role)
    # Whose trail the entries go into: the route's tenant, or the one a contract names (an
    # organisation changed through tenants/{slug}/, the organisation an invitation is from).
    tenant = (contract.audit_tenant(world) if hasattr(contract, "audit_tenant")
              else world.tenant if contract.tenant_scoped else None)
    if operation == "create":
        body = contract.create_body(world)
        response = client.post(contract.list_url, body, format="json")
        if contract.model._meta.label_lower == "tenants.tenant":
            tenant = contract.model.objects.get(slug=body["slug"])
        return role, response, tenant
    obj = contract.make_object(world)
    url = contract.detail_url(obj)
    if operation == "put":
        body = {**client.get(url).json(), **contract.update_body(world)}
        return role, client.put(url, body, format="json"), tenant
    if operation == "patch":
        return role, client.patch(url, contract.update_body(world), format="json"), tenant
    if operation == "delete":
        return role, client.delete(url), tenant
    contract.before_action(world, obj, action)
    with world.run_tasks():
        return role, getattr(client, action.method)(contract.action_url(obj, action)), tenant


@pytest.mark.parametrize("route", sorted(CASES), ids="{0[0]}:{0[1]}".format)
def test_each_mutating_route_is_audited(route, request, api, users):
    contract, operation, action = CASES[route]
    if contract is None:  # the token routes: logging in and out, revoking a token by id
        client = api()
        response = client.post("/api/v1/auth/token/", {"username": "member",
                                                       "password": PASSWORD}, format="json")
        if route[1] == "delete":
            client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
            response = client.delete("/api/v1/auth/token/" if route[0] == "auth-token"
                                     else f"/api/v1/auth/tokens/{response.json()['id']}/")
        role, tenant = "member", None
    else:
        role, response, tenant = _perform(contract, operation, action, World.of(request), api)
    assert response.status_code < 300, response.content

    rows = of_request(response)
    assert any(row.result == "ok" and row.actor == users[role] for row in rows), rows
    for row in rows:
        # Whom an invitation reached is for platform staff only (tenants/services.py).
        trail = None if row.action == "invitation.deliver" else tenant
        assert (row.source, row.source_ip, row.tenant) == ("api", "127.0.0.1", trail), row
        assert row.actor in (users[role], None) and row.actor_name in (role, "")


# --- refusals: denied and rejected, after the rollback -----------------------------------------
def test_a_forbidden_mutation_is_recorded_as_denied(api, make_pool, users):
    pool = make_pool()
    response = api("member").patch(f"/api/v1/tenants/acme/pools/{pool.id}/",
                                   {"name": "Mine"}, format="json")
    assert response.status_code == 403
    [row] = of_request(response)
    assert (row.action, row.result, row.actor, row.object_id) == (
        "pool.update", "denied", users["member"], str(pool.id))
    assert row.tenant.slug == "acme" and row.details["error"]["code"] == "permission_denied"


def test_platform_routes_refused_to_tenant_users_are_platform_entries(api, host):
    response = api("admin").post(f"/api/v1/hosts/{host.id}/drain/")
    assert response.status_code == 403
    [row] = of_request(response)
    assert (row.action, row.result, row.tenant, row.object_id) == (
        "host.drain", "denied", None, str(host.id))


def test_a_conflict_is_recorded_as_rejected_although_its_transaction_rolled_back(
        api, member_desktop, users):
    response = api("member").post(f"/api/v1/tenants/acme/desktops/{member_desktop.id}/start/")
    assert response.status_code == 409
    [row] = of_request(response)
    assert (row.action, row.result, row.actor) == ("desktop.start", "rejected", users["member"])
    assert row.details["error"] == {"code": "invalid_state",
                                    "message": "Cannot start a desktop that is running."}


def test_a_quota_refusal_is_rejected(api, make_pool, tenant, host):
    pool = make_pool(max_desktops=1)
    tenant.max_sessions = 0
    tenant.save()
    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 409
    [row] = of_request(response)
    assert (row.action, row.result, row.details["error"]["code"]) == (
        "session.connect", "rejected", "quota_exceeded")


def test_bad_input_is_rejected_and_changes_nothing(api, image):
    response = api("admin").post("/api/v1/tenants/acme/pools/", {"name": ""}, format="json")
    assert response.status_code == 400
    [row] = of_request(response)
    assert (row.action, row.result, row.object_id) == ("pool.create", "rejected", "")
    with scopes_disabled():
        assert not Pool.objects.exists()


def test_a_refusal_inside_an_enclosing_transaction_survives_its_rollback(member_desktop, users):
    """Django admin saves inside a transaction of its own: the refusal rolls it back, and
    the entry is written when the request ends."""
    with context.boundary(request_id="req-rollback", source="admin"):
        with pytest.raises(Conflict), transaction.atomic(), tenant_scope(member_desktop.tenant):
            services.desktop_power(desktop=member_desktop, kind="start", actor=users["admin"])
    [row] = entries(request_id="req-rollback")
    assert (row.action, row.result, row.source) == ("desktop.start", "rejected", "admin")


def test_a_replayed_request_is_not_recorded_twice(api, member_desktop):
    member = api("member")
    url = f"/api/v1/tenants/acme/desktops/{member_desktop.id}/reboot/"
    first = member.post(url, HTTP_IDEMPOTENCY_KEY="k-1")
    again = member.post(url, HTTP_IDEMPOTENCY_KEY="k-1")
    assert again["Idempotent-Replayed"] == "true"
    assert len(of_request(first)) == 1 and of_request(again) == []


# --- the portal, Django admin and tasks -------------------------------------------------------
@pytest.fixture
def portal(client, users):
    client.force_login(users["admin"])
    return client


def test_portal_mutations_are_portal_entries(portal, users, image, host, run_tasks):
    form = {"name": "Office", "description": "", "image": str(image.id), "kind": "floating",
            "protocol": "spice", "vcpus": 1, "memory_mb": 256, "min_ready": 1,
            "min_stopped": 0, "max_desktops": 3, "max_per_user": 1, "idle_timeout_s": 0,
            "max_session_s": 0, "on_logoff": "recycle", "ticket_ttl_s": "",
            "entitle_all_members": "on", "enabled": "on"}
    with run_tasks():
        assert portal.post("/t/acme/pools/new/", form).status_code == 302
    with scopes_disabled():
        pool = Pool.objects.get(name="Office")
        desktop = Desktop.objects.get(pool=pool)
    assert portal.post(f"/t/acme/pools/{pool.id}/edit/",
                       {**form, "max_desktops": 4}).status_code == 302
    with run_tasks():
        portal.post(f"/t/acme/pools/{pool.id}/connect/")
    with scopes_disabled():
        session = Session.objects.get(pool=pool)
    portal.post(f"/t/acme/desktops/{desktop.id}/reboot/")
    portal.post(f"/t/acme/sessions/{session.id}/end/")
    assert portal.post(f"/t/acme/pools/{pool.id}/delete/").status_code == 302

    rows = entries(source="portal")
    assert [row.action for row in rows] == [
        "pool.create", "pool.update", "session.connect", "session.ticket", "desktop.reboot",
        "session.end", "pool.delete"]
    assert all(row.actor == users["admin"] and row.result == "ok" and row.source_ip
               == "127.0.0.1" and row.tenant.slug == "acme" for row in rows)
    assert rows[1].details == {"max_desktops": 4}


def test_a_refusal_in_the_portal_is_recorded(portal, member_desktop):
    portal.post(f"/t/acme/desktops/{member_desktop.id}/start/")  # it is running
    [row] = entries(source="portal")
    assert (row.action, row.result) == ("desktop.start", "rejected")


def test_a_member_refused_an_admin_page_in_the_portal_is_recorded(client, users):
    client.force_login(users["member"])
    response = client.post("/t/acme/members/", {"who": "mallory", "role": "owner"})
    assert response.status_code == 403
    [row] = of_request(response)
    assert (row.action, row.result, row.source, row.actor) == (
        "portal.member_list", "denied", "portal", users["member"])
    assert row.details["path"] == "/t/acme/members/" and row.tenant.slug == "acme"
    assert client.get("/t/acme/members/").status_code == 403
    assert entries(action="portal.member_list") == [row]  # looking is not a change


def test_an_invalid_portal_form_is_a_rejected_entry(portal):
    response = portal.post("/t/acme/pools/new/", {"name": "", "vcpus": "lots"})
    assert response.status_code == 200
    [row] = of_request(response)
    assert (row.action, row.result, row.source) == ("pool.create", "rejected", "portal")
    assert "name" in row.details["fields"] and "vcpus" in row.details["fields"]
    assert "lots" not in json.dumps(row.details)  # the fields at fault, not their values
    response = portal.post("/t/acme/members/", {"who": "", "role": "king"})
    [row] = of_request(response)
    assert (row.action, row.result) == ("member.invite", "rejected")


@pytest.fixture
def operator(client, make_user):
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    return client


def test_admin_actions_and_edits_are_admin_entries(operator, tenant, host, member_desktop,
                                                   run_tasks, users):
    with run_tasks():
        operator.post("/admin/hypervisors/host/", {"action": "drain",
                                                   "_selected_action": [host.pk]})
        operator.post("/admin/vdi/desktop/", {"action": "reboot",
                                              "_selected_action": [member_desktop.pk]})
    with scopes_disabled():
        membership = Membership.objects.get(user=users["member"])
    response = operator.post(f"/admin/tenants/membership/{membership.pk}/change/", {
        "tenant": tenant.pk, "user": users["member"].pk, "role": "admin"})
    assert response.status_code == 302
    with scopes_disabled():
        session = Session.objects.create(tenant=tenant, pool=member_desktop.pool,
                                         user=users["member"])
    operator.post(f"/admin/brokers/session/{session.pk}/delete/", {"post": "yes"})

    rows = entries(source="admin")
    assert [(row.action, row.tenant and row.tenant.slug) for row in rows] == [
        ("host.drain", None), ("desktop.reboot", "acme"), ("membership.update", "acme"),
        ("session.delete", "acme")]
    assert all(row.actor_name == "operator" and row.result == "ok" for row in rows)
    assert rows[2].details["changed"] == ["role"]
    assert rows[3].object_id == str(session.pk)


def test_an_inline_change_in_the_admin_is_audited_per_row(operator, tenant, make_user):
    """The tenant page's members are an inline formset (its prefix is "-1": the membership's
    tenant key has no reverse name)."""
    newcomer = make_user("newcomer")
    response = operator.post(f"/admin/tenants/tenant/{tenant.pk}/change/", {
        "slug": "acme", "name": "Acme Corp", "-1-TOTAL_FORMS": "1", "-1-INITIAL_FORMS": "0",
        "-1-0-user": newcomer.pk, "-1-0-role": "member"})
    assert response.status_code == 302
    rows = entries(source="admin")
    assert [(row.action, row.tenant.slug, row.actor_name) for row in rows] == [
        ("tenant.update", "acme", "operator"), ("membership.create", "acme", "operator")]
    assert rows[0].details["changed"] == ["name"]
    with scopes_disabled():
        assert rows[1].object_id == str(Membership.objects.get(user=newcomer).pk)


def test_the_audit_log_admin_is_read_only_and_shows_every_field(operator):
    audit_record(tenant=None, action="host.refresh", target=Desktop, actor=None)
    page = operator.get("/admin/tenants/auditevent/?result__exact=ok&source__exact=system")
    assert page.status_code == 200 and "host.refresh" in page.content.decode()
    assert operator.get("/admin/tenants/auditevent/add/").status_code == 403
    with scopes_disabled():
        row = AuditEvent.objects.get()
    assert operator.post(f"/admin/tenants/auditevent/{row.pk}/delete/",
                         {"post": "yes"}).status_code == 403


def test_a_finished_operation_is_a_system_entry_once_whatever_its_retries(
        make_pool, host, run_tasks, monkeypatch):
    with run_tasks():
        pool = make_pool(min_ready=1)
    [provisioned] = entries(action="desktop.provision")
    assert (provisioned.actor, provisioned.source, provisioned.result) == (None, "task", "ok")
    assert provisioned.request_id and provisioned.tenant.slug == "acme"

    def broken(desktop, operation):
        raise executors.DriverError("the host refused")

    monkeypatch.setitem(executors._EXECUTORS, "reboot", broken)
    with scopes_disabled(), run_tasks():
        desktop = Desktop.objects.get(pool=pool)
        services.desktop_power(desktop=desktop, kind="reboot", actor=None)
    [failed] = entries(action="desktop.reboot", source="task")
    assert (failed.result, failed.object_id) == ("failed", str(desktop.id))
    assert failed.details["error"] == "the host refused"


def test_a_pool_deleted_to_the_end_keeps_its_ids_in_the_trail(make_pool, host, run_tasks,
                                                               users):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
    with run_tasks(), scopes_disabled():
        services.pool_delete(pool=pool, actor=users["admin"])
    assert [(row.action, row.actor_name, row.object_id) for row in entries(
        action__in=("pool.delete", "desktop.delete"))] == [
        ("pool.delete", "admin", str(pool.id)), ("desktop.delete", "", str(desktop.id)),
        ("pool.delete", "", str(pool.id))]


# --- the API's view of the trail --------------------------------------------------------------
def test_the_api_filters_by_result_source_and_action_and_hides_platform_entries(
        api, member_desktop, host):
    api("member").post(f"/api/v1/tenants/acme/desktops/{member_desktop.id}/start/")  # 409
    api("staff").post(f"/api/v1/hosts/{host.id}/drain/")  # a platform entry
    admin = api("admin")
    url = "/api/v1/tenants/acme/audit/"

    rejected = admin.get(url, {"result": "rejected", "source": "api"}).json()
    assert [row["action"] for row in rejected["results"]] == ["desktop.start"]
    assert set(rejected["results"][0]) >= {"result", "source", "request_id"}
    assert admin.get(url, {"action": "host.drain"}).json()["count"] == 0
    assert admin.get(url, {"result": "maybe"}).status_code == 400
    exported = admin.get(url, {"format": "csv", "result": "rejected"}).content.decode()
    assert "request_id" in exported.splitlines()[0] and "rejected" in exported


def test_platform_entries_fail_closed(host, tenant):
    audit_record(tenant=None, action="host.refresh", target=host, actor=None)
    with pytest.raises(TenantScopeError):
        list(AuditEvent.objects.all())
    with tenant_scope(tenant):
        assert not AuditEvent.objects.filter(action="host.refresh").exists()


# --- append-only ------------------------------------------------------------------------------
@pytest.fixture
def entry(tenant, users):
    return audit_record(tenant=tenant, actor=users["admin"], action="pool.create",
                        target=tenant)


def test_entries_are_never_changed_or_deleted(entry):
    entry.action = "pool.delete"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with scopes_disabled():
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.filter(pk=entry.pk).update(action="x")
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.filter(pk=entry.pk).delete()


def test_a_tenant_with_a_trail_is_kept_a_deleted_users_entries_keep_their_name(entry, users):
    with pytest.raises(ProtectedError):
        entry.tenant.delete()
    users["admin"].delete()
    [row] = entries(pk=entry.pk)
    assert row.actor is None and row.actor_name == "admin"


@pytest.mark.postgresql
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
@pytest.mark.parametrize("sql", [
    "UPDATE tenants_auditevent SET action = 'forged'",
    "DELETE FROM tenants_auditevent",
    "UPDATE tenants_auditevent SET actor_id = NULL, action = 'forged'",
])
def test_postgresql_refuses_raw_updates_and_deletes(entry, sql):
    from django.db import DatabaseError

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql)
    assert entries(pk=entry.pk)[0].action == "pool.create"


# --- no secrets -------------------------------------------------------------------------------
def test_no_secret_ever_reaches_the_trail(api, make_pool, host, run_tasks, users, mailoutbox,
                                          django_capture_on_commit_callbacks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    token = api("admin")._credentials["HTTP_AUTHORIZATION"].split()[1]
    with run_tasks():
        connected = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    with scopes_disabled(), run_tasks():
        session = Session.objects.get(pk=connected["session"])
        browser = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
    with django_capture_on_commit_callbacks(execute=True):
        api("owner").post("/api/v1/tenants/acme/members/", {"email": "new@example.org",
                                                            "role": "member"}, format="json")
    link = re.search(r"https?://\S+/invitations/\S+", mailoutbox[0].body).group(0)

    secrets = {token, connected["password"], browser.password, browser.token,
               link.rstrip("/").rsplit("/", 1)[1]}
    trail = json.dumps([[row.details, row.object_id, row.action] for row in entries()])
    assert all(secret and secret not in trail for secret in secrets)
    assert {"session.connect", "session.ticket", "member.invite", "token.create"} <= {
        row.action for row in entries()}


def test_the_console_proxy_taking_a_token_is_recorded_and_a_replay_denied(
        make_pool, host, run_tasks, users):
    from brokers.services import console_token_consume

    with run_tasks():
        pool = make_pool(min_ready=1)
    with tenant_scope(pool.tenant), run_tasks():
        session = session_connect(user=users["member"], pool=pool).session
        browser = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
    with scopes_disabled():  # the simulated host has no VNC display: give the ticket one
        ConnectionTicket.objects.filter(pk=browser.ticket.pk).update(port=5901)
    assert console_token_consume(token=browser.token) is not None
    assert console_token_consume(token=browser.token) is None
    rows = entries(action="session.console")
    assert [(row.result, row.source, row.actor) for row in rows] == [
        ("ok", "system", None), ("denied", "system", None)]
    assert rows[1].details == {"ticket": str(browser.ticket.id), "replayed": True}


def test_details_that_name_a_secret_are_refused(tenant):
    with pytest.raises(ValueError, match="secret"):
        audit_record(tenant=tenant, action="session.ticket", target=tenant, actor=None,
                     details={"ticket": {"password": "hunter2"}})


def test_a_session_is_connected_and_ended_by_whom(make_pool, host, run_tasks, users):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with tenant_scope(pool.tenant), run_tasks():
        result = session_connect(user=users["member"], pool=pool)
    connect, ticket = entries(action__startswith="session.")
    assert connect.details["session"] == str(result.session.id)
    assert ticket.details["kind"] == "native" and "password" not in ticket.details
    assert get_user_model().objects.get(pk=connect.actor_id) == users["member"]
