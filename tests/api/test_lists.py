"""Lists (SPEC §4): paginated, filterable and sortable; bad parameters are 400s in the error
envelope; each list runs the same number of queries whatever the number of rows."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from brokers.models import Session
from hypervisors.models import Host
from tenants.choices import Role
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add, tenant_create
from vdi.models import Desktop, Image, Operation, Pool

from .test_slice import assert_error

PAGE_SIZE = settings.REST_FRAMEWORK["PAGE_SIZE"]
MANY = 15
serial = itertools.count()


# --- building rows ----------------------------------------------------------------------
@pytest.fixture
def rows(tenant, image, users, make_user):
    """``rows.<kind>(n)`` adds n rows a list shows, each with its own related objects (own
    user, host, pool...) so that a per-row query could not hide behind a shared one."""

    class Rows:
        def user(self):
            person = make_user(f"user{next(serial)}")
            membership_add(tenant=tenant, user=person, role=Role.MEMBER)
            return person

        def host(self):
            return Host.objects.create(name=f"kvm-{next(serial)}", uri="test:///default",
                                       console_address="127.0.0.1", state="up", cpus=8,
                                       memory_mb=16384)

        def pool(self, **fields):
            fields.setdefault("name", f"pool-{next(serial)}")
            with tenant_scope(tenant):
                return Pool.objects.create(tenant=tenant, image=image, memory_mb=256, **fields)

        def desktop(self, pool=None, **fields):
            fields.setdefault("state", "running")
            if "host" not in fields:
                fields["host"] = self.host()
            if "assigned_user" not in fields:
                fields["assigned_user"] = self.user()
            with tenant_scope(tenant):
                return Desktop.objects.create(tenant=tenant, pool=pool or self.pool(),
                                              image=image, name=f"vdi-{uuid.uuid4().hex[:16]}",
                                              vcpus=1, memory_mb=256, **fields)

        def operation(self, **fields):
            desktop = self.desktop()
            fields.setdefault("kind", "start")
            if "actor" not in fields:
                fields["actor"] = self.user()
            with tenant_scope(tenant):
                return Operation.objects.create(tenant=tenant, desktop=desktop,
                                                pool=desktop.pool, **fields)

        def session(self, **fields):
            operation = self.operation()
            fields.setdefault("user", operation.desktop.assigned_user)
            with tenant_scope(tenant):
                return Session.objects.create(tenant=tenant, pool=operation.pool,
                                              desktop=operation.desktop, operation=operation,
                                              **fields)

        # One list row each, as the list endpoints are named.
        def hosts(self, n):
            for _ in range(n):
                self.desktop(host=self.host())

        def images(self, n):
            with scopes_disabled():
                for i in range(n):
                    Image.objects.create(name=f"img-{next(serial)}", base_volume="x.qcow2",
                                         tenant=tenant if i % 2 else None)

        def tenants(self, n):
            for _ in range(n):
                tenant_create(slug=f"org-{next(serial)}", name="Org", owner=make_user(
                    f"boss{next(serial)}"))

        def members(self, n):
            for _ in range(n):
                self.user()

        def pools(self, n):
            for _ in range(n):
                pool = self.pool()
                self.desktop(pool=pool)

        def desktops(self, n):
            for _ in range(n):
                self.desktop()

        def operations(self, n):
            for _ in range(n):
                self.operation()

        def sessions(self, n):
            for _ in range(n):
                self.session()

    return Rows()


PLATFORM = "/api/v1/"
TENANT = "/api/v1/tenants/acme/"
LISTS = [  # (list, url, who sees everything)
    ("hosts", PLATFORM + "hosts/", "staff"),
    ("images", PLATFORM + "images/", "staff"),
    ("tenants", PLATFORM + "tenants/", "staff"),
    ("members", TENANT + "members/", "admin"),
    ("pools", TENANT + "pools/", "admin"),
    ("desktops", TENANT + "desktops/", "admin"),
    ("sessions", TENANT + "sessions/", "admin"),
    ("operations", TENANT + "operations/", "admin"),
]


def list_with_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json(), len(queries)


# --- query counts -----------------------------------------------------------------------
def test_fifteen_rows_fit_on_one_default_page():
    assert MANY < PAGE_SIZE  # else the comparison below would compare two full pages


@pytest.mark.parametrize("kind,url,role", LISTS, ids=[entry[0] for entry in LISTS])
def test_a_list_runs_the_same_number_of_queries_for_1_or_15_rows(rows, api, kind, url, role):
    client = api(role)
    build = getattr(rows, kind)
    build(1)
    one, queries_for_one = list_with_queries(client, url)
    build(MANY - 1)
    many, queries_for_many = list_with_queries(client, url)
    assert many["count"] == one["count"] + MANY - 1
    assert len(many["results"]) == many["count"] <= PAGE_SIZE
    assert queries_for_many == queries_for_one, (kind, queries_for_one, queries_for_many)
    print(f"{kind}: {queries_for_one} queries")  # noqa: T201 (shown with -s)


@pytest.mark.parametrize("kind,url,role", LISTS, ids=[entry[0] for entry in LISTS])
def test_filtered_and_sorted_lists_run_a_fixed_number_of_queries_too(rows, api, kind, url,
                                                                       role):
    client = api(role)
    build = getattr(rows, kind)
    query = f"{url}?created_after=2000-01-01T00:00:00Z&ordering=-created_at&limit=40"
    build(2)
    _, few = list_with_queries(client, query)
    build(MANY)
    _, more = list_with_queries(client, query)
    assert few == more


# --- pagination ---------------------------------------------------------------------------
def test_lists_are_paginated(rows, api):
    rows.desktops(3)
    client = api("admin")
    body = client.get(TENANT + "desktops/?limit=2").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3 and len(body["results"]) == 2 and body["previous"] is None
    rest = client.get(body["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
    seen = {d["id"] for d in body["results"]} | {d["id"] for d in rest["results"]}
    assert len(seen) == 3


def test_a_huge_limit_is_cut_to_the_maximum(rows, api):
    rows.desktops(2)
    for limit in ("99999999999999999999", "9223372036854775807"):
        body = api("admin").get(TENANT + "desktops/", {"limit": limit}).json()
        assert body["count"] == 2 and len(body["results"]) == 2


# --- filters ------------------------------------------------------------------------------
def ids(response):
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_desktop_filters(rows, api, users, tenant, host):
    pool = rows.pool()
    mine = rows.desktop(pool=pool, assigned_user=users["member"], host=host)
    stopped = rows.desktop(state="stopped")
    spare = rows.desktop(pool=pool, assigned_user=None)
    with tenant_scope(tenant):
        Desktop.objects.filter(pk=stopped.pk).update(
            created_at=timezone.now() - timedelta(days=3))
    client = api("admin")
    url = TENANT + "desktops/"
    assert ids(client.get(url, {"state": "stopped"})) == {str(stopped.id)}
    assert ids(client.get(url + "?state=stopped&state=running")) == {
        str(mine.id), str(stopped.id), str(spare.id)}
    assert ids(client.get(url, {"pool": pool.id})) == {str(mine.id), str(spare.id)}
    assert ids(client.get(url, {"host": host.id})) == {str(mine.id)}
    assert ids(client.get(url, {"assigned_user": "member"})) == {str(mine.id)}
    assert ids(client.get(url, {"assigned_user": "nobody"})) == set()
    two_days_ago = (timezone.now() - timedelta(days=2)).isoformat()
    assert ids(client.get(url, {"created_before": two_days_ago})) == {str(stopped.id)}
    assert ids(client.get(url, {"created_after": two_days_ago})) == {str(mine.id), str(spare.id)}
    assert str(stopped.id) in ids(client.get(url, {"created_after": "2000-01-01"}))
    # A member sees their own desktops only, whatever the filter asks.
    assert ids(api("member").get(url)) == {str(mine.id)}
    assert ids(api("member").get(url, {"assigned_user": stopped.assigned_user.username})) == set()


def test_session_and_operation_filters_by_username(rows, api, users):
    theirs = rows.session()
    mine = rows.session(user=users["member"], state="ready")
    operation = rows.operation(actor=users["admin"], kind="reboot", state="succeeded")
    client = api("admin")
    assert ids(client.get(TENANT + "sessions/", {"user": "member"})) == {str(mine.id)}
    assert ids(client.get(TENANT + "sessions/", {"state": "pending"})) == {str(theirs.id)}
    assert ids(client.get(TENANT + "sessions/", {"pool": mine.pool_id})) == {str(mine.id)}
    operations = TENANT + "operations/"
    assert ids(client.get(operations, {"actor": "admin"})) == {str(operation.id)}
    assert ids(client.get(operations, {"kind": "reboot"})) == {str(operation.id)}
    assert ids(client.get(operations, {"state": "succeeded"})) == {str(operation.id)}
    assert ids(client.get(operations, {"desktop": operation.desktop_id})) == {str(operation.id)}


def test_member_host_image_pool_and_tenant_filters(rows, api, users, image, host, tenant):
    client = api("admin")
    members = ids(client.get(TENANT + "members/", {"role": "admin"}))
    assert len(members) == 1
    assert [m["username"] for m in client.get(TENANT + "members/",
                                              {"username": "owner"}).json()["results"]] == ["owner"]
    off = rows.pool(enabled=False)
    on = rows.pool()
    assert ids(client.get(TENANT + "pools/", {"enabled": "false"})) == {str(off.id)}
    assert ids(client.get(TENANT + "pools/", {"enabled": "true"})) == {str(on.id)}
    assert ids(client.get(TENANT + "pools/", {"image": image.id})) == {str(off.id), str(on.id)}

    staff = api("staff")
    down = Host.objects.create(name="kvm-down", uri="test:///default", state="down",
                               enabled=False, console_address="x")
    assert ids(staff.get(PLATFORM + "hosts/", {"state": "down"})) == {str(down.id)}
    assert ids(staff.get(PLATFORM + "hosts/", {"enabled": "0"})) == {str(down.id)}
    assert ids(staff.get(PLATFORM + "hosts/", {"state": "up"})) == {str(host.id)}
    with scopes_disabled():
        own = Image.objects.create(tenant=tenant, name="win", base_volume="w.qcow2")
    assert ids(staff.get(PLATFORM + "images/", {"tenant": tenant.id})) == {str(own.id)}
    assert ids(staff.get(PLATFORM + "images/", {"name": "debian"})) == {str(image.id)}
    Tenant.objects.filter(slug="globex").update(status="suspended")
    suspended = staff.get(PLATFORM + "tenants/", {"status": "suspended"}).json()["results"]
    assert [t["slug"] for t in suspended] == ["globex"]


def test_ordering(rows, api):
    for name in ("b", "c", "a"):
        rows.pool(name=name)
    client = api("admin")
    names = [p["name"] for p in client.get(TENANT + "pools/?ordering=-name").json()["results"]]
    assert names == ["c", "b", "a"]
    names = [p["name"] for p in client.get(TENANT + "pools/?ordering=name").json()["results"]]
    assert names == ["a", "b", "c"]
    rows.desktops(3)
    states = client.get(TENANT + "desktops/?ordering=state,-created_at").json()["results"]
    assert len(states) == 3
    members = client.get(TENANT + "members/?ordering=-role").json()["results"]
    assert [m["role"] for m in members][:1] == ["owner"]


# --- bad parameters -----------------------------------------------------------------------
BAD = [
    ("admin", TENANT + "desktops/", "state", "exploded"),
    ("admin", TENANT + "desktops/", "pool", "not-a-uuid"),
    ("admin", TENANT + "desktops/", "pool", str(uuid.uuid4())),
    ("admin", TENANT + "desktops/", "host", "12"),
    ("admin", TENANT + "desktops/", "created_after", "yesterday"),
    ("admin", TENANT + "desktops/", "created_before", "2025-13-45"),
    ("admin", TENANT + "desktops/", "ordering", "password"),
    ("admin", TENANT + "desktops/", "ordering", "name,-nope"),
    ("admin", TENANT + "pools/", "enabled", "maybe"),
    ("admin", TENANT + "pools/", "kind", "shared"),
    ("admin", TENANT + "pools/", "image", "not-a-uuid"),
    ("admin", TENANT + "sessions/", "state", "asleep"),
    ("admin", TENANT + "sessions/", "desktop", "x"),
    ("admin", TENANT + "operations/", "kind", "explode"),
    ("admin", TENANT + "operations/", "created_after", "soon"),
    ("admin", TENANT + "operations/", "created_after", "0001-01-01T00:00:00+05:00"),
    ("admin", TENANT + "operations/", "created_before", "9999-12-31T23:00:00-05:00"),
    ("admin", TENANT + "operations/", "actor", "nul\x00byte"),
    ("admin", TENANT + "members/", "role", "king"),
    ("admin", TENANT + "members/", "ordering", "user__password"),
    ("staff", PLATFORM + "hosts/", "enabled", "yes please"),
    ("staff", PLATFORM + "hosts/", "state", "on fire"),
    ("staff", PLATFORM + "images/", "tenant", "acme"),
    ("staff", PLATFORM + "images/", "ordering", "base_volume"),
    ("staff", PLATFORM + "tenants/", "status", "gone"),
    ("staff", PLATFORM + "tenants/", "created_before", "1 Jan 2020"),
]


@pytest.mark.parametrize("role,url,param,value", BAD)
def test_a_bad_filter_value_is_a_400_naming_the_parameter(api, tenant, role, url, param, value):
    error = assert_error(api(role).get(url, {param: value}), 400, "invalid")
    assert list(error["details"]) == [param], error
    assert isinstance(error["details"][param], list) and error["details"][param][0]


def test_any_utc_offset_python_reads_is_accepted(rows, api):
    """PostgreSQL refuses offsets past ±15:59; the filter converts to UTC first."""
    rows.desktops(1)
    client = api("admin")
    for value in ("2000-01-01T00:00:00+17:20", "2000-01-01T00:00:00-23:56", "2000-01-01"):
        assert len(ids(client.get(TENANT + "desktops/", {"created_after": value}))) == 1
        assert ids(client.get(TENANT + "desktops/", {"created_before": value})) == set()


def test_another_tenants_pool_is_an_invalid_filter_not_a_leak(api, other_tenant, image):
    with tenant_scope(other_tenant):
        theirs = Pool.objects.create(tenant=other_tenant, name="Theirs", image=image)
    error = assert_error(api("admin").get(TENANT + "desktops/", {"pool": theirs.id}), 400)
    assert "pool" in error["details"]
