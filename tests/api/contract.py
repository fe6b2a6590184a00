"""The REST contract (SPEC §4) as one shared suite, after NetBox's utilities/testing/api.py.

A resource's test module only supplies data: where it lives, how to make one, a valid create
and update body, its custom actions, and which roles may do what. Every action is then tried
as each role, allowed and refused:

- anonymous: 401; a role the route does not admit: 403 on platform routes, 404 under
  ``tenants/{slug}/`` (non-members never learn that a tenant exists);
- a method the resource does not offer: 405;
- an object the role may not see: 404 (and it is absent from the list);
- a role that sees it but may not act: 403;
- refusals carry the error envelope and change nothing; successes carry the resource's fields.

Known application bugs are listed by the resource as ``known_bugs`` and turn the affected
(action, role) cases into strict xfails, so the suite stays green, the bug stays visible and
the marker fails once it is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import pytest
from django.forms.models import model_to_dict

from brokers.services import session_connect
from tenants.scoping import scopes_disabled, tenant_scope
from tests.api.test_slice import assert_error
from vdi.models import Desktop

ROLES = ("anonymous", "member", "admin", "owner", "outsider", "staff")
AUTHENTICATED = frozenset(ROLES) - {"anonymous"}
TENANT_ADMINS = frozenset({"admin", "owner", "staff"})  # staff act in any tenant as admins
IN_TENANT = TENANT_ADMINS | {"member"}
STAFF = frozenset({"staff"})
NOBODY = frozenset()

LIST_FIELDS = {"count", "next", "previous", "results"}
TICKET_FIELDS = frozenset({"session", "desktop", "state", "protocol", "host", "port", "tls_port",
                           "password", "expires_at", "vv_url", "console_url"})
PENDING_FIELDS = frozenset({"session", "state", "retry_after", "operation"})
OPERATION_FIELDS = frozenset({"id", "kind", "state", "desktop", "pool", "actor", "attempts",
                              "error", "created_at", "started_at", "finished_at"})
SESSION_FIELDS = frozenset({"id", "pool", "desktop", "user", "state", "end_reason", "operation",
                            "created_at", "ready_at", "connected_at", "ended_at"})


@dataclass
class World:
    """The conftest fixtures a resource builds its data from: tenant ``acme`` with a user per
    role, ``globex`` (the outsider's), the simulated host ``sim-1`` and the image."""

    users: dict
    tenant: object
    other_tenant: object
    host: object
    image: object
    make_pool: Callable
    make_user: Callable
    run_tasks: Callable

    @classmethod
    def of(cls, request) -> World:
        """From the requesting test's fixtures of the same names."""
        return cls(**{field.name: request.getfixturevalue(field.name) for field in fields(cls)})

    def desktop_of(self, role: str, pool_name: str = "Desks"):
        """A running desktop (a real domain on the simulated host) assigned to ``role``."""
        with self.run_tasks():
            pool = self.make_pool(name=pool_name, min_ready=1)
        with scopes_disabled():
            desktop = Desktop.objects.get(pool=pool)
            Desktop.objects.filter(pk=desktop.pk).update(assigned_user=self.users[role])
            desktop.refresh_from_db()
        return desktop

    def session_of(self, role: str, pool_name: str = "Desks"):
        """A ready session of ``role`` on a running desktop, as Connect leaves it."""
        desktop = self.desktop_of(role, pool_name)
        with tenant_scope(self.tenant), self.run_tasks():
            return session_connect(user=self.users[role], pool=desktop.pool).session


# The envelope's code for the refusals whose cause is unambiguous; a 403's code says why
# (``permission_denied``, ``not_desktop_holder``...).
REFUSAL_CODES = {401: "not_authenticated", 404: "not_found", 405: "method_not_allowed"}


def assert_refused(response, status: int) -> dict:
    return assert_error(response, status, REFUSAL_CODES.get(status))


def client_for(api, role: str):
    """The ``api`` fixture's client for ``role`` ("anonymous": no credentials)."""
    return api(None if role == "anonymous" else role)


@dataclass(frozen=True)
class Action:
    """A custom action on one object, e.g. ``POST desktops/{id}/reboot/``."""

    name: str
    may: frozenset[str]
    status: int = 200
    fields: frozenset[str] = frozenset()
    method: str = "post"
    suffix: str | None = None  # the URL segment, when it is not ``{name}/``
    content_type: str = "application/json"
    eager: bool = False  # tasks must really run (a console ticket waits for a worker)

    def __str__(self) -> str:
        return self.name


class Contract:
    """Base of every resource's contract suite; subclasses supply the data below."""

    model = None
    list_url: str = ""
    fields: frozenset[str] = frozenset()
    # Who gets past authentication, the permission class and the tenant check.
    reach: frozenset[str] = IN_TENANT
    # Per standard action ("list", "get", "create", "update", "delete"): the roles allowed.
    # An action that is absent is not offered by the resource (405).
    may: dict[str, frozenset[str]] = {}
    hidden_from: frozenset[str] = NOBODY  # roles that reach the route but may not see the object
    actions: tuple[Action, ...] = ()
    lookup_field = "id"
    create_status = 201
    delete_status = 204
    # {(action name, role or "*"): reason}: known bugs, run as strict xfails.
    known_bugs: dict[tuple[str, str], str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A resource without custom actions has nothing to parametrize ``test_action`` with:
        # it is left out rather than collected as an empty, skipped case.
        cls.test_action = Contract.__dict__["test_action"] if cls.actions else None

    # --- data hooks -----------------------------------------------------------------------
    def make_object(self, world):
        raise NotImplementedError

    def create_body(self, world) -> dict:
        raise NotImplementedError

    def update_body(self, world) -> dict:
        raise NotImplementedError

    def before_action(self, world, obj, action: Action) -> None:
        """Put ``obj`` in a state where ``action`` is legal (e.g. stopped, to start it)."""

    def assert_deleted(self, world, obj, body) -> None:
        assert self.snapshot(obj) is None

    # --- derived --------------------------------------------------------------------------
    @property
    def tenant_scoped(self) -> bool:
        return isinstance(self, TenantContract)

    def lookup(self, obj) -> str:
        return str(getattr(obj, self.lookup_field))

    def detail_url(self, obj) -> str:
        return f"{self.list_url}{self.lookup(obj)}/"

    def action_url(self, obj, action: Action) -> str:
        return self.detail_url(obj) + (action.suffix if action.suffix is not None
                                       else f"{action.name}/")

    def expected(self, operation: str, role: str, success: int, *, detail: bool = True) -> int:
        if role == "anonymous":
            return 401
        if role not in self.reach:
            return 404 if self.tenant_scoped else 403
        may = self.may.get(operation) if operation in self.may else next(
            (action.may for action in self.actions if action.name == operation), None)
        if may is None:
            return 405
        if detail and role in self.hidden_from:
            return 404
        return success if role in may else 403

    def count(self) -> int:
        with scopes_disabled():
            return self.model._base_manager.count()

    def snapshot(self, obj) -> dict | None:
        with scopes_disabled():
            row = self.model._base_manager.filter(pk=obj.pk).first()
        return None if row is None else model_to_dict(row)

    # --- pytest plumbing ------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc):
        """Every test runs once per role; ``test_action`` once per custom action and role.
        A known bug turns its cases into strict xfails."""
        operation = metafunc.function.__name__.removeprefix("test_")
        if "action" in metafunc.fixturenames:
            cases = [(action, role) for action in self.actions for role in ROLES]
            metafunc.parametrize("action,role", [
                pytest.param(action, role, id=f"{action}-{role}",
                             marks=self._bug_marks(action.name, role))
                for action, role in cases])
        elif "role" in metafunc.fixturenames:
            metafunc.parametrize("role", [
                pytest.param(role, id=role, marks=self._bug_marks(operation, role))
                for role in ROLES])

    def _bug_marks(self, operation: str, role: str):
        reason = self.known_bugs.get((operation, role)) or self.known_bugs.get((operation, "*"))
        return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []

    @pytest.fixture
    def world(self, request):
        return World.of(request)

    @pytest.fixture
    def obj(self, world):
        return self.make_object(world)

    # --- the contract ---------------------------------------------------------------------
    def test_list(self, role, world, obj, api):
        expected = self.expected("list", role, 200, detail=False)
        response = client_for(api, role).get(self.list_url)
        if expected != 200:
            assert_refused(response, expected)
            return
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == LIST_FIELDS, body
        for item in body["results"]:
            assert self.fields <= set(item), item
        listed = {str(item[self.lookup_field]) for item in body["results"]}
        assert (self.lookup(obj) in listed) == (role not in self.hidden_from), listed
        assert body["count"] == len(body["results"]) or body["next"]

    def test_get(self, role, world, obj, api):
        expected = self.expected("get", role, 200)
        response = client_for(api, role).get(self.detail_url(obj))
        if expected != 200:
            assert_refused(response, expected)
            return
        assert response.status_code == 200, response.content
        body = response.json()
        assert self.fields <= set(body), body
        assert str(body[self.lookup_field]) == self.lookup(obj)

    def test_create(self, role, world, obj, api):
        expected = self.expected("create", role, self.create_status, detail=False)
        body = self.create_body(world) if "create" in self.may else {}
        before = self.count()
        response = client_for(api, role).post(self.list_url, body, format="json")
        if expected != self.create_status:
            assert_refused(response, expected)
            assert self.count() == before
            return
        assert response.status_code == expected, response.content
        created = response.json()
        assert self.fields <= set(created), created
        assert self.count() == before + 1
        # What was created can be read back at its own URL, as it was sent.
        again = client_for(api, role).get(f"{self.list_url}{created[self.lookup_field]}/")
        assert again.status_code == 200, again.content
        for name in body.keys() & self.fields:
            assert again.json()[name] == created[name] == body[name], name

    def test_update(self, role, world, obj, api):
        expected = self.expected("update", role, 200)
        body = self.update_body(world) if "update" in self.may else {}
        before = self.snapshot(obj)
        response = client_for(api, role).patch(self.detail_url(obj), body, format="json")
        if expected != 200:
            assert_refused(response, expected)
            assert self.snapshot(obj) == before
            return
        assert response.status_code == 200, response.content
        updated = response.json()
        assert self.fields <= set(updated), updated
        for name, value in body.items():
            assert updated[name] == value, (name, updated)
        assert self.snapshot(obj) != before

    def test_delete(self, role, world, obj, api):
        expected = self.expected("delete", role, self.delete_status)
        before = self.snapshot(obj)
        response = client_for(api, role).delete(self.detail_url(obj))
        if expected != self.delete_status:
            assert_refused(response, expected)
            assert self.snapshot(obj) == before
            return
        assert response.status_code == expected, response.content
        body = response.json() if response.content else None
        if body is not None:
            assert self.fields <= set(body), body
        self.assert_deleted(world, obj, body)

    def test_action(self, action, role, world, obj, api):
        expected = self.expected(action.name, role, action.status)
        self.before_action(world, obj, action)
        before = self.snapshot(obj)
        client = client_for(api, role)
        if action.eager:
            with world.run_tasks():
                response = getattr(client, action.method)(self.action_url(obj, action))
        else:
            response = getattr(client, action.method)(self.action_url(obj, action))
        if expected != action.status:
            assert_refused(response, expected)
            assert self.snapshot(obj) == before
            return
        assert response.status_code == action.status, response.content
        assert response["Content-Type"].split(";")[0] == action.content_type
        if action.content_type == "application/json":
            assert action.fields <= set(response.json()), response.json()

    def test_unknown_id_is_a_404(self, world, api):
        """An id that names nothing answers 404 in the envelope, even to staff."""
        unknown = "00000000-0000-4000-8000-000000000000" if self.lookup_field == "id" else "nope"
        assert_error(api("staff").get(f"{self.list_url}{unknown}/"), 404, "not_found")


class PlatformContract(Contract):
    """``hosts/``, ``images/``: platform staff only; everyone else gets 403."""

    reach = STAFF


class TenantContract(Contract):
    """Routes under ``tenants/{slug}/``: members (and staff, as admins); others get 404."""

    reach = IN_TENANT

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        private = cls.make_private_object is not TenantContract.make_private_object
        cls.test_a_member_does_not_see_what_is_not_theirs = (
            TenantContract.__dict__["test_a_member_does_not_see_what_is_not_theirs"]
            if private else None)

    def make_private_object(self, world):
        """Optional: an object in acme the plain member may not see (another user's, or a
        pool they are not entitled to)."""
        raise NotImplementedError

    def test_a_member_does_not_see_what_is_not_theirs(self, world, api):
        """It is 404 to them, absent from their list and out of their actions' reach, while
        the tenant's admins see it."""
        private = self.make_private_object(world)
        member = client_for(api, "member")
        assert_error(member.get(self.detail_url(private)), 404, "not_found")
        listed = {str(item[self.lookup_field])
                  for item in member.get(self.list_url).json()["results"]}
        assert self.lookup(private) not in listed
        for action in self.actions:
            if "member" in action.may:
                response = getattr(member, action.method)(self.action_url(private, action))
                assert_error(response, 404, "not_found")
        assert client_for(api, "admin").get(self.detail_url(private)).status_code == 200

    def test_another_tenants_route_does_not_reach_it(self, world, obj, api):
        """An admin of another tenant asking through their own tenant's route gets 404."""
        url = self.detail_url(obj).replace("/tenants/acme/", "/tenants/globex/", 1)
        assert_error(api("outsider").get(url), 404, "not_found")

    def test_an_unknown_tenant_is_a_404_even_for_staff(self, world, api):
        assert_error(api("staff").get(self.list_url.replace("/acme/", "/nope/", 1)), 404)
