"""A pool whose provisioning keeps failing says so, in the API and in the portal; and
libvirt's own words reach only platform staff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.scoping import scopes_disabled, tenant_scope
from vdi.choices import DesktopState, OperationKind, OperationState
from vdi.models import Desktop, Operation

RAW = "internal error: cannot create overlay /var/lib/libvirt/images/vdi-1.qcow2 on kvm7"
GENERIC_POOL = "New desktops for this pool could not be created; the platform team has the details."


def finished(pool, kind, state, *, minutes_ago, error="", desktop=None, actor=None):
    with scopes_disabled():
        return Operation.objects.create(
            tenant=pool.tenant, pool=pool, desktop=desktop, kind=kind, state=state,
            error=error, actor=actor, finished_at=timezone.now() - timedelta(minutes=minutes_ago))


def pool_json(api, role, pool):
    response = api(role).get(f"/api/v1/tenants/acme/pools/{pool.id}/")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_pool_that_never_built_a_desktop_says_so(api, make_pool):
    pool = make_pool()
    finished(pool, OperationKind.PROVISION, OperationState.FAILED, minutes_ago=10, error="x")
    finished(pool, OperationKind.PROVISION, OperationState.FAILED, minutes_ago=5, error=RAW)

    problem = pool_json(api, "admin", pool)["provisioning_error"]

    assert problem["failures"] == 2
    assert problem["message"] == GENERIC_POOL  # tenant admins are not platform staff
    since = timezone.datetime.fromisoformat(problem["since"].replace("Z", "+00:00"))
    assert timezone.now() - timedelta(minutes=11) < since < timezone.now() - timedelta(minutes=9)
    assert pool_json(api, "staff", pool)["provisioning_error"]["message"] == RAW
    assert pool_json(api, "member", pool)["provisioning_error"]["message"] == GENERIC_POOL


def test_only_failures_since_the_last_success_count(api, make_pool):
    pool = make_pool()
    finished(pool, OperationKind.PROVISION, OperationState.FAILED, minutes_ago=30, error="old")
    finished(pool, OperationKind.RESET, OperationState.SUCCEEDED, minutes_ago=20)
    finished(pool, OperationKind.START, OperationState.FAILED, minutes_ago=15, error="power")
    assert pool_json(api, "admin", pool)["provisioning_error"] is None  # all well since

    finished(pool, OperationKind.RESET, OperationState.FAILED, minutes_ago=3, error=RAW)
    problem = pool_json(api, "staff", pool)["provisioning_error"]
    assert problem["failures"] == 1 and problem["message"] == RAW

    finished(pool, OperationKind.PROVISION, OperationState.SUCCEEDED, minutes_ago=1)
    assert pool_json(api, "admin", pool)["provisioning_error"] is None


def test_a_real_failing_provisioning_is_reported(api, make_pool, tenant):
    """No host can take the pool's desktops: the attempts fail and the pool says so."""
    from vdi.services import desktop_create, operation_run

    pool = make_pool(min_ready=0)
    with tenant_scope(tenant):
        desktop_create(pool=pool, actor=None, start=True)
        operation = Operation.objects.get(pool=pool)
    while operation.state == OperationState.PENDING:
        with scopes_disabled():
            operation_run(operation_id=operation.id)
        operation.refresh_from_db()

    problem = pool_json(api, "staff", pool)["provisioning_error"]
    assert problem["failures"] == 1 and "no enabled, up host has room" in problem["message"]
    listed = api("admin").get("/api/v1/tenants/acme/pools/").json()["results"]
    assert listed[0]["provisioning_error"]["message"] == GENERIC_POOL


def test_the_pools_page_and_the_dashboard_warn(logged_in, make_pool, client):
    pool = make_pool(name="Office")
    finished(pool, OperationKind.PROVISION, OperationState.FAILED, minutes_ago=2, error=RAW)

    page = logged_in("admin").get("/t/acme/pools/").content.decode()
    row = page[page.index(f'data-pool="{pool.pk}"'):]
    assert 'data-field="provisioning-error"' in row and "Provisioning keeps failing" in row
    assert GENERIC_POOL in row and RAW not in page

    dashboard = logged_in("member").get("/t/acme/").content.decode()
    assert "cannot be prepared at the moment" in dashboard and RAW not in dashboard

    staff_page = logged_in("staff").get("/t/acme/pools/").content.decode()
    assert RAW in staff_page


def test_a_healthy_pool_shows_no_warning(logged_in, make_pool):
    pool = make_pool(name="Office")
    finished(pool, OperationKind.PROVISION, OperationState.SUCCEEDED, minutes_ago=2)
    page = logged_in("admin").get("/t/acme/pools/").content.decode()
    assert 'data-field="provisioning-error"' not in page


# --- raw errors are for staff ---------------------------------------------------------------
@pytest.fixture
def broken_desktop(member_desktop, users):
    """The member's desktop after a start that failed with libvirt's words."""
    with scopes_disabled():
        Desktop.objects.filter(pk=member_desktop.pk).update(state=DesktopState.ERROR,
                                                            last_error=RAW)
        member_desktop.refresh_from_db()
    finished(member_desktop.pool, OperationKind.START, OperationState.FAILED, minutes_ago=1,
             error=RAW, desktop=member_desktop, actor=users["member"])
    return member_desktop


@pytest.mark.parametrize("role", ["member", "admin", "owner"])
def test_members_and_tenant_admins_read_a_plain_sentence(api, broken_desktop, role):
    client = api(role)
    desktop = client.get(f"/api/v1/tenants/acme/desktops/{broken_desktop.id}/").json()
    operations = client.get("/api/v1/tenants/acme/operations/?state=failed").json()["results"]

    assert desktop["last_error"] == ("The desktop ran into a problem; the platform team has "
                                     "the details.")
    assert [op["error"] for op in operations if op["kind"] == "start"] == [
        "The desktop could not be started; the platform team has the details."]


def test_staff_read_libvirts_words(api, broken_desktop):
    staff = api("staff")
    desktop = staff.get(f"/api/v1/tenants/acme/desktops/{broken_desktop.id}/").json()
    operations = staff.get("/api/v1/tenants/acme/operations/?state=failed").json()["results"]
    assert desktop["last_error"] == RAW
    assert [op["error"] for op in operations] == [RAW]


def test_the_portal_shows_raw_errors_to_staff_only(logged_in, broken_desktop):
    dashboard = logged_in("member").get("/t/acme/").content.decode()
    assert "The desktop ran into a problem" in dashboard and RAW not in dashboard

    operations = logged_in("admin").get("/t/acme/operations/?failed=1").content.decode()
    assert "The desktop could not be started" in operations and RAW not in operations

    assert RAW in logged_in("staff").get("/t/acme/operations/?failed=1").content.decode()


# --- members see their own operations -------------------------------------------------------
def test_members_see_what_they_asked_for_and_the_platforms_work_on_their_desktops(
        api, member_desktop, users):
    pool = member_desktop.pool
    mine = finished(pool, OperationKind.REBOOT, OperationState.SUCCEEDED, minutes_ago=4,
                    desktop=member_desktop, actor=users["member"])
    # An earlier user's work on the same (floating) desktop, and an admin's elsewhere.
    earlier_user = finished(pool, OperationKind.SHUTDOWN, OperationState.SUCCEEDED,
                            minutes_ago=50, desktop=member_desktop, actor=users["owner"])
    elsewhere = finished(pool, OperationKind.PROVISION, OperationState.SUCCEEDED,
                         minutes_ago=3, actor=users["admin"])
    with scopes_disabled():
        platform = Operation.objects.get(desktop=member_desktop, kind=OperationKind.PROVISION)

    seen = {op["id"] for op in
            api("member").get("/api/v1/tenants/acme/operations/").json()["results"]}
    assert seen == {str(mine.id), str(platform.id)}
    everything = {op["id"] for op in
                  api("admin").get("/api/v1/tenants/acme/operations/").json()["results"]}
    assert {str(earlier_user.id), str(elsewhere.id), str(mine.id)} <= everything
    assert api("member").get(f"/api/v1/tenants/acme/operations/{earlier_user.id}/"
                             ).status_code == 404


def test_the_audit_trail_keeps_libvirts_words_for_staff(api, broken_desktop, tenant):
    from tenants.audit import audit_record

    audit_record(tenant=tenant, actor=None, action="desktop.start", target=Desktop,
                 object_id=broken_desktop.id, result="failed",
                 details={"operation": "x", "attempts": 1, "error": RAW})

    def errors(role):
        entries = api(role).get("/api/v1/tenants/acme/audit/?action=desktop.start").json()
        return [entry["details"]["error"] for entry in entries["results"]]

    assert errors("admin") == [
        "The desktop could not be started; the platform team has the details."]
    assert errors("staff") == [RAW]
