"""Fuzzing the OpenAPI schema (SPEC §5: "fuzzing the OpenAPI schema yields no 5xx").

The schema is the one the app serves at ``/api/schema/`` (fetched through its WSGI handler when
this module is collected). Every operation in it is one test per identity, platform staff and
a tenant admin of ``acme``, each with its own token. Schemathesis generates the requests:
valid ones and invalid ones aimed at real objects (the tenant ``acme`` and, for ``{id}``, a
seeded host, image, membership, pool, desktop, session or operation), and valid ones with
random path parameters. They go through Django's WSGI handler in this process, each inside a
savepoint that is rolled back, so every example starts from the same data; tasks enqueued on
commit never run, and the few a request waits for (a console ticket) run eagerly.

Each response must be no 5xx, have a documented status, content type and body, and every error
must be SPEC §4's envelope. The bugs this fuzzer found are kept below as deterministic
regression tests, one request each.

Bounded and reproducible: ``MAX_EXAMPLES`` per operation and identity, derandomised, no
example database.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from tenants.models import Invitation, Membership
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.audit import audit_record
from tenants.tokens import api_token_create
from tests.api.contract import World
from config import celery_app
from vdi.models import Desktop, Operation

# Hypothesis keeps caches of its own in a directory: the test data directory, not the work tree.
set_hypothesis_home_dir(str(django_settings.DATA_DIR / "hypothesis"))

MAX_EXAMPLES = 15
IDENTITIES = ("admin", "staff")

SCHEMA = schemathesis.openapi.from_wsgi(
    "/api/schema/", get_wsgi_application(),
    # The fuzzer sends the identity's token itself; no security parameters are generated.
    config=schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}}),
)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]
SCHEMA_ERRORS = [result.err() for result in SCHEMA.get_all_operations()
                 if not isinstance(result, Ok)]


# --- checks -------------------------------------------------------------------------------
class ErrorEnvelopeViolation(Failure):
    """A 4xx answer that is not SPEC §4's JSON error envelope."""

    code = "VDI01"
    kind_title = "Error is not the SPEC error envelope"

    def __init__(self, *, operation, status_code: int, content_type: str, message: str):
        super().__init__(operation=operation, message=message)
        self.status_code = status_code
        self.content_type = content_type

    @property
    def _unique_key(self) -> str:
        return str(self.status_code)


def error_envelope(ctx, response, case):
    """Every 4xx is ``{"error": {"code", "message", "details"}}`` as JSON (a 5xx is
    not_a_server_error's)."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    try:
        body = response.json() if content_type.startswith("application/json") else None
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
    if not (isinstance(error, dict) and {"code", "message", "details"} <= set(error)
            and isinstance(error["code"], str) and isinstance(error["details"], dict)):
        raise ErrorEnvelopeViolation(
            operation=case.operation.label, status_code=response.status_code,
            content_type=content_type,
            message=f"[{response.status_code}] {content_type}: {response.content[:300]!r}")
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, error_envelope]


USAGE_LABEL = "GET /api/v1/tenants/{tenant_slug}/usage/"
AUDIT_LABEL = "GET /api/v1/tenants/{tenant_slug}/audit/"


def validate(case, response) -> None:
    """Every check in CHECKS; a FailureGroup says which failed and how to replay it."""
    case.validate_response(response, checks=CHECKS)


# --- data ---------------------------------------------------------------------------------
class Seed:
    """The objects ``{id}`` points at, made only when an operation needs them."""

    def __init__(self, world: World, identity: str):
        self.world, self.identity = world, identity

    @cached_property
    def hosts(self):
        return self.world.host.id

    @cached_property
    def images(self):
        return self.world.image.id

    @cached_property
    def members(self):
        with scopes_disabled():
            return Membership.objects.get(tenant=self.world.tenant,
                                          user=self.world.users["member"]).id

    @cached_property
    def pools(self):
        return self.world.make_pool(name="Office").id

    @cached_property
    def desktops(self):  # another user's running desktop: power actions and takeover apply
        return self.world.desktop_of("member", pool_name="Members").id

    @cached_property
    def operations(self):
        with scopes_disabled():
            return Operation.objects.filter(desktop_id=self.desktops).first().id

    @cached_property
    def invitations(self):  # the identity's own, from acme: both acme's and theirs to answer
        with tenant_scope(self.world.tenant):
            return Invitation.objects.create(
                tenant=self.world.tenant, user=self.world.users[self.identity],
                username=self.identity, token_hash=uuid.uuid4().hex,
                expires_at=timezone.now() + timedelta(days=1)).id

    @cached_property
    def audit(self):  # an entry of the tenant's audit trail
        with tenant_scope(self.world.tenant):
            return audit_record(tenant=self.world.tenant, actor=self.world.users["owner"],
                                action="member.role", target=self.world.tenant).id

    @cached_property
    def tokens(self):  # another API token of the identity's: revoking it spares the one in use
        return api_token_create(user=self.world.users[self.identity], name="Seeded")[0].id

    @cached_property
    def sessions(self):  # the identity's own ready session: ticket, console.vv and end apply
        return self.world.session_of(self.identity, pool_name="Own").id

    def path_parameters(self, operation) -> dict[str, str]:
        values = {}
        for parameter in operation.path_parameters:
            if parameter.name in ("tenant_slug", "slug"):
                values[parameter.name] = "acme"
            elif parameter.name == "id":
                resource = operation.path.split("/{id}")[0].rsplit("/", 1)[-1]
                values["id"] = str(getattr(self, resource))
            else:
                raise AssertionError(f"no seed for {parameter.name} in {operation.label}")
        return values


@pytest.fixture
def world(request):
    return World.of(request)


@contextmanager
def in_process():
    """Requests through the WSGI handler inside the test's transaction, as Django's test
    client makes them: its request signals would otherwise close the connection in the
    middle of the transaction (so no test client may be used meanwhile: it reconnects them).
    A console ticket waits for a worker; here its task runs in the request instead."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = eager
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def send(case, headers=None):
    """Make the request in a savepoint that is rolled back: every request finds the same
    data, and one that breaks the transaction (a database error) does not break the next."""
    with transaction.atomic():
        response = case.call(headers=headers)
        transaction.set_rollback(True)
    return response


def token_of(api, identity: str) -> str:
    return api(identity)._credentials["HTTP_AUTHORIZATION"]


# --- the fuzz -----------------------------------------------------------------------------
def test_the_schema_loads_whole():
    assert not SCHEMA_ERRORS, SCHEMA_ERRORS
    assert len(OPERATIONS) > 40


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
@pytest.mark.parametrize("identity", IDENTITIES)
def test_fuzz(identity, operation, world, api):
    seeded = Seed(world, identity).path_parameters(operation)
    headers = {"Authorization": token_of(api, identity)}
    strategy = st.one_of(
        operation.as_strategy(path_parameters=seeded),
        operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=seeded),
        operation.as_strategy(),
    )
    reached = []

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case):
        response = send(case, headers)
        if case.path_parameters == seeded and response.status_code != 404:
            reached.append(response.status_code)
        validate(case, response)

    with in_process():
        fuzz()
    # Not one request may have missed the seeded objects without this test saying so.
    assert reached, f"no request reached the seeded objects {seeded}"


# --- what the fuzzer found, as regression tests -----------------------------------------------
def call(api, identity: str | None, label: str, **case):
    """One request for the operation ``label`` ("GET /api/v1/..."), as ``identity``."""
    method, path = label.split(" ", 1)
    headers = {"Authorization": token_of(api, identity)} if identity else {}
    request = SCHEMA[path][method].Case(headers=headers, **case)
    with in_process():
        return request, send(request)


def conforms(api, identity: str | None, label: str, **case) -> None:
    request, response = call(api, identity, label, **case)
    validate(request, response)


def test_an_error_is_a_documented_response(api, tenant, users):
    conforms(api, None,
              "GET /api/v1/tenants/{tenant_slug}/pools/", path_parameters={"tenant_slug": "acme"})


@pytest.mark.parametrize("kind", ["start", "shutdown", "poweroff", "reboot", "reset"])
def test_power_actions_are_documented_as_202(kind, world, api):
    desktop = world.desktop_of("member")
    if kind == "start":
        with scopes_disabled():
            Desktop.objects.filter(pk=desktop.pk).update(state="stopped")
    conforms(api, "admin",
              f"POST /api/v1/tenants/{{tenant_slug}}/desktops/{{id}}/{kind}/",
              path_parameters={"tenant_slug": "acme", "id": str(desktop.id)})


@pytest.mark.parametrize("name", ["activate", "refresh"])
def test_host_activate_and_refresh_are_documented_as_202(name, world, api):
    conforms(api, "staff", f"POST /api/v1/hosts/{{id}}/{name}/",
              path_parameters={"id": str(world.host.id)})


def test_a_spare_desktop_matches_the_schema(world, api):
    with world.run_tasks():
        pool = world.make_pool(min_ready=1)
    with scopes_disabled():
        spare = Desktop.objects.get(pool=pool)
    conforms(api, "admin",
              "GET /api/v1/tenants/{tenant_slug}/desktops/{id}/",
              path_parameters={"tenant_slug": "acme", "id": str(spare.id)})


def test_a_created_pool_matches_the_schema(world, api):
    conforms(api, "admin", "POST /api/v1/tenants/{tenant_slug}/pools/",
              path_parameters={"tenant_slug": "acme"},
              body={"name": "Engineering", "image": str(world.image.id), "memory_mb": 256},
              media_type="application/json")


def test_a_deleted_pool_matches_the_schema(world, api):
    pool = world.make_pool()
    conforms(api, "admin",
              "DELETE /api/v1/tenants/{tenant_slug}/pools/{id}/",
              path_parameters={"tenant_slug": "acme", "id": str(pool.id)})


def test_a_live_session_matches_the_schema(world, api):
    session = world.session_of("member")
    conforms(api, "member",
              "GET /api/v1/tenants/{tenant_slug}/sessions/{id}/",
              path_parameters={"tenant_slug": "acme", "id": str(session.id)})


def test_usage_matches_the_schema(world, api):
    conforms(api, "admin", USAGE_LABEL,
              path_parameters={"tenant_slug": "acme"}, query={"month": "2026-01"})


@pytest.mark.parametrize("label,query", [
    (USAGE_LABEL, {"format": "csv", "month": "January"}),
    (AUDIT_LABEL, {"format": "csv", "created_after": "never"}),
], ids=["usage", "audit"])
def test_a_csv_report_error_is_the_envelope(label, query, world, api):
    conforms(api, "admin", label, path_parameters={"tenant_slug": "acme"},
              query=query)


@pytest.mark.parametrize("moment", [
    "2026-01-01T00:00:00+20:00",  # an offset past PostgreSQL's ±15:59
    "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC (SQLite overflowed)
], ids=["offset-beyond-15:59", "before-year-1-in-utc"])
@pytest.mark.parametrize("label", ["GET /api/v1/tenants/{tenant_slug}/pools/", AUDIT_LABEL],
                         ids=["pools", "audit"])
def test_a_created_range_at_the_edge_of_time_is_no_server_error(label, moment, world, api):
    """Found by this fuzzer: these were 500s (a DataError on PostgreSQL, an OverflowError on
    SQLite) before the lists' created_after/created_before were normalised to UTC."""
    request, response = call(api, "admin", label, path_parameters={"tenant_slug": "acme"},
                             query={"created_after": moment})
    validate(request, response)
