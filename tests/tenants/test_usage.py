"""Usage metering: the journal the state machines keep, and monthly figures computed from it,
checked against hand-computed cases across a month boundary."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime, timezone

import pytest

from brokers.choices import SessionState
from tenants.models import MonthlyUsage, UsageEvent
from tenants.scoping import scopes_disabled
from tenants.usage import usage_aggregate, usage_for_month
from tests.api.test_slice import assert_error
from vdi.choices import DESKTOP_MACHINE, DesktopState
from vdi.models import Desktop


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def journal(tenant, subject, subject_id, active, at, vcpus=0, memory_mb=0):
    with scopes_disabled():
        UsageEvent.objects.create(tenant=tenant, subject=subject, subject_id=subject_id,
                                  state="x", active=active, at=at, vcpus=vcpus,
                                  memory_mb=memory_mb)


@pytest.fixture
def history(tenant):
    """A desktop (2 vCPUs, 2 GiB) running from Jan 31 22:00 to Feb 1 04:00 and again from
    Feb 28 23:00 onwards; sessions: one Jan 31 23:00 → Feb 1 01:00, and two overlapping
    on Feb 10 (10:00 → 12:00 and 11:00 → 11:30)."""
    desktop, s1, s2, s3 = (uuid.uuid4() for _ in range(4))
    size = {"vcpus": 2, "memory_mb": 2048}
    journal(tenant, "desktop", desktop, True, utc(2026, 1, 31, 22), **size)
    journal(tenant, "desktop", desktop, False, utc(2026, 2, 1, 4), **size)
    journal(tenant, "desktop", desktop, True, utc(2026, 2, 28, 23), **size)
    journal(tenant, "session", s1, True, utc(2026, 1, 31, 23))
    journal(tenant, "session", s1, False, utc(2026, 2, 1, 1))
    journal(tenant, "session", s2, True, utc(2026, 2, 10, 10))
    journal(tenant, "session", s3, True, utc(2026, 2, 10, 11))
    journal(tenant, "session", s3, False, utc(2026, 2, 10, 11, 30))
    journal(tenant, "session", s2, False, utc(2026, 2, 10, 12))


def test_a_month_counts_only_its_own_share_of_each_interval(tenant, history):
    january = usage_for_month(tenant=tenant, month=date(2026, 1, 1), now=utc(2026, 3, 5))
    february = usage_for_month(tenant=tenant, month=date(2026, 2, 1), now=utc(2026, 3, 5))

    # January: the desktop's 2 h before midnight, the first session's 1 h.
    assert (january["desktop_hours"], january["vcpu_hours"], january["memory_gb_hours"]) == \
        (2, 4, 4)
    assert (january["session_hours"], january["peak_sessions"]) == (1, 1)
    assert january["complete"] is True
    # February: 4 h after midnight + 1 h on the 28th (to the end of the month, not "now").
    assert february["desktop_hours"] == 5 and february["vcpu_hours"] == 10
    assert february["memory_gb_hours"] == 10
    # Sessions: 1 h (Feb 1) + 2 h + 0.5 h, two at once on the 10th.
    assert (february["session_hours"], february["peak_sessions"]) == (3.5, 2)


def test_a_desktop_still_running_counts_up_to_now(tenant, history):
    march = usage_for_month(tenant=tenant, month=date(2026, 3, 1), now=utc(2026, 3, 1, 12))

    assert march["desktop_hours"] == 12 and march["complete"] is False
    assert march["session_hours"] == 0 and march["peak_sessions"] == 0


def test_a_session_ending_as_another_begins_is_not_two_at_once(tenant):
    first, second = uuid.uuid4(), uuid.uuid4()
    journal(tenant, "session", first, True, utc(2026, 4, 1, 9))
    journal(tenant, "session", first, False, utc(2026, 4, 1, 10))
    journal(tenant, "session", second, True, utc(2026, 4, 1, 10))
    journal(tenant, "session", second, False, utc(2026, 4, 1, 11))

    april = usage_for_month(tenant=tenant, month=date(2026, 4, 1), now=utc(2026, 5, 1))

    assert (april["session_hours"], april["peak_sessions"]) == (2, 1)


def test_the_beat_stores_this_month_and_the_last(tenant, other_tenant, history):
    assert usage_aggregate(now=utc(2026, 3, 1, 6)) == 4  # 2 tenants x 2 months
    with scopes_disabled():
        stored = MonthlyUsage.objects.get(tenant=tenant, month=date(2026, 2, 1))
        assert stored.desktop_hours == 5 and stored.peak_sessions == 2
        assert MonthlyUsage.objects.get(tenant=tenant, month=date(2026, 3, 1)).desktop_hours == 6
    usage_aggregate(now=utc(2026, 3, 1, 7))  # recomputed in place
    with scopes_disabled():
        assert MonthlyUsage.objects.filter(tenant=tenant).count() == 2


def test_the_state_machines_keep_the_journal(make_pool, host, run_tasks, tenant, api):
    with run_tasks():
        pool = make_pool(min_ready=1, vcpus=2, memory_mb=512)
    with run_tasks():
        body = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    with scopes_disabled():
        desktop = Desktop.objects.get(pk=body["desktop"])
        events = list(UsageEvent.objects.filter(tenant=tenant).order_by("at", "id"))
    desktop_events = [(e.state, e.active) for e in events if e.subject_id == desktop.id]
    assert (DesktopState.RUNNING, True) in desktop_events
    assert all(e.vcpus == 2 and e.memory_mb == 512 for e in events if e.subject == "desktop")
    session_events = [(e.state, e.active) for e in events if str(e.subject_id) == body["session"]]
    assert session_events == [(SessionState.READY, True)]

    with scopes_disabled():
        DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPING)
        assert UsageEvent.objects.filter(subject_id=desktop.id).last().active is False


# --- the API --------------------------------------------------------------------------------
def test_admins_read_usage_as_json_and_csv(api, tenant, history):
    admin = api("admin")

    body = admin.get("/api/v1/tenants/acme/usage/?month=2026-02").json()
    assert body["desktop_hours"] == 5 and body["peak_sessions"] == 2

    response = admin.get("/api/v1/tenants/acme/usage/?month=2026-02&format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["month"] == "2026-02" and float(rows[0]["session_hours"]) == 3.5


@pytest.mark.parametrize("month", ["2026-13", "26-02", "2026-2", "nonsense", ""])
def test_a_bad_month_is_a_400(api, tenant, month):
    assert_error(api("admin").get(f"/api/v1/tenants/acme/usage/?month={month}"), 400)


def test_usage_and_audit_are_for_admins(api, tenant, users):
    assert api("member").get("/api/v1/tenants/acme/usage/").status_code == 403
    assert api("member").get("/api/v1/tenants/acme/audit/").status_code == 403
    assert api("outsider").get("/api/v1/tenants/acme/usage/").status_code == 404
    assert api().get("/api/v1/tenants/acme/audit/").status_code == 401


def test_the_audit_trail_lists_and_exports(api, make_pool, host, run_tasks, users):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks():
        body = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
        api("admin").post(f"/api/v1/tenants/acme/desktops/{body['desktop']}/takeover/")
    admin = api("admin")

    listed = admin.get("/api/v1/tenants/acme/audit/?action=desktop.takeover").json()
    assert listed["count"] == 1
    event = listed["results"][0]
    assert event["actor"] == "admin" and event["object_id"] == body["desktop"]
    assert admin.get(f"/api/v1/tenants/acme/audit/{event['id']}/").status_code == 200
    exported = admin.get("/api/v1/tenants/acme/audit/?format=csv").content.decode()
    assert "desktop.takeover" in exported and body["desktop"] in exported
    assert api("outsider").get(
        "/api/v1/tenants/globex/audit/?action=desktop.takeover").json()["count"] == 0


def test_suspending_an_organisation_ends_its_sessions_and_is_audited(
    api, make_pool, host, run_tasks, tenant, users, client, make_user
):
    from tenants.models import AuditEvent, Tenant

    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks():
        body = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))

    with run_tasks():
        response = client.post("/admin/tenants/tenant/", {
            "action": "suspend", "_selected_action": [str(tenant.pk)]})

    assert response.status_code == 302
    assert Tenant.objects.get(pk=tenant.pk).status == "suspended"
    with scopes_disabled():
        from brokers.models import Session

        session = Session.objects.get(pk=body["session"])
        assert (session.state, session.end_reason) == ("ended", "admin")
        assert AuditEvent.objects.filter(tenant=tenant, action="tenant.suspended").exists()
    again = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert_error(again, 409, "tenant_suspended")
