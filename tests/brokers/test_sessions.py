"""Sessions: one console owner per desktop, audited takeover, time limits, bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from brokers.choices import EndReason, SessionState, TicketKind
from brokers.models import Session
from brokers.services import console_token_consume, sessions_expire, ticket_issue
from tenants.models import AuditEvent
from tenants.scoping import scopes_disabled
from tests.api.test_slice import assert_error, connect
from vdi.models import Desktop, Pool


@pytest.fixture
def ready_pool(make_pool, host, run_tasks):
    with run_tasks():
        return make_pool(min_ready=2, idle_timeout_s=600, max_session_s=3600)


def session_of(body) -> Session:
    with scopes_disabled():
        return Session.objects.select_related("desktop", "pool").get(pk=body["session"])


# --- one console owner ----------------------------------------------------------------------
def test_only_the_sessions_user_gets_tickets(api, ready_pool, run_tasks):
    body = connect(api("member"), ready_pool, run_tasks).json()
    url = f"/api/v1/tenants/acme/sessions/{body['session']}/ticket/"

    with run_tasks():
        assert_error(api("admin").post(url), 403, "not_desktop_holder")
        assert api("member").post(url).status_code == 200


def test_an_admin_takes_a_desktop_over_and_it_is_audited(api, ready_pool, run_tasks, users):
    member_session = session_of(connect(api("member"), ready_pool, run_tasks).json())
    desktop = member_session.desktop

    with run_tasks():
        response = api("admin").post(f"/api/v1/tenants/acme/desktops/{desktop.id}/takeover/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["desktop"] == str(desktop.id) and body["password"]
    with scopes_disabled():
        member_session.refresh_from_db()
        takeover = Session.objects.get(pk=body["session"])
        event = AuditEvent.objects.get(action="desktop.takeover")
    assert (member_session.state, member_session.end_reason) == (SessionState.ENDED,
                                                                 EndReason.ADMIN)
    assert takeover.user == users["admin"] and takeover.state == SessionState.READY
    assert event.actor == users["admin"] and event.object_id == str(desktop.id)
    assert event.details["from_users"] == ["member"]
    assert event.source_ip == "127.0.0.1"
    assert body["password"] not in str(event.details)
    with scopes_disabled():  # the desktop stays with its pool's user rules: not recycled
        assert Desktop.objects.get(pk=desktop.pk).state == "running"


def test_members_cannot_take_over(api, ready_pool, run_tasks):
    body = connect(api("admin"), ready_pool, run_tasks).json()
    response = api("member").post(f"/api/v1/tenants/acme/desktops/{body['desktop']}/takeover/")
    assert response.status_code == 403
    with scopes_disabled():  # the refusal is in the trail; no takeover is
        [event] = AuditEvent.objects.filter(action="desktop.takeover")
    assert event.result == "denied" and event.actor_name == "member"


# --- time limits ----------------------------------------------------------------------------
def age(session: Session, **delta) -> None:
    past = timezone.now() - timedelta(**delta)
    with scopes_disabled():
        Session.objects.filter(pk=session.pk).update(ready_at=past, state_changed_at=past)


def test_an_idle_session_ends_and_its_floating_desktop_is_recycled(api, ready_pool, run_tasks):
    session = session_of(connect(api("member"), ready_pool, run_tasks).json())
    age(session, seconds=601)

    with run_tasks(), scopes_disabled():
        assert sessions_expire() == 1

    with scopes_disabled():
        session.refresh_from_db()
        desktop = Desktop.objects.get(pk=session.desktop_id)
    assert (session.state, session.end_reason) == (SessionState.ENDED, EndReason.IDLE)
    assert desktop.assigned_user is None  # on_logoff=recycle: back to the pool
    with scopes_disabled():
        assert desktop.operations.filter(kind="reset", state="succeeded").exists()


def test_a_connected_session_is_not_idle_but_still_has_a_maximum(api, ready_pool, run_tasks):
    session = session_of(connect(api("member"), ready_pool, run_tasks).json())
    with scopes_disabled():
        Session.objects.filter(pk=session.pk).update(state=SessionState.CONNECTED)
    age(session, seconds=601)

    with run_tasks(), scopes_disabled():
        assert sessions_expire() == 0
    age(session, seconds=3601)
    with run_tasks(), scopes_disabled():
        assert sessions_expire() == 1
        session.refresh_from_db()
    assert session.end_reason == EndReason.MAX_DURATION


def test_pools_without_limits_keep_their_sessions(api, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(name="Unlimited", min_ready=1)
    session = session_of(connect(api("member"), pool, run_tasks).json())
    age(session, days=30)

    with run_tasks(), scopes_disabled():
        assert sessions_expire() == 0


# --- bad input ------------------------------------------------------------------------------
def test_a_ticket_for_an_ended_session_is_409_and_changes_nothing(api, ready_pool, run_tasks):
    member = api("member")
    body = connect(member, ready_pool, run_tasks).json()
    with run_tasks():
        assert member.post(f"/api/v1/tenants/acme/sessions/{body['session']}/end/"
                           ).status_code == 200
    with scopes_disabled():
        tickets = session_of(body).tickets.count()

    assert_error(member.post(f"/api/v1/tenants/acme/sessions/{body['session']}/ticket/"),
                 409, "session_ended")
    with scopes_disabled():
        assert session_of(body).tickets.count() == tickets


def test_other_tenants_and_forged_session_ids_are_404(api, ready_pool, run_tasks):
    body = connect(api("member"), ready_pool, run_tasks).json()
    outsider = api("outsider")
    for path in (f"/api/v1/tenants/acme/sessions/{body['session']}/ticket/",
                 f"/api/v1/tenants/globex/sessions/{body['session']}/ticket/",
                 "/api/v1/tenants/acme/sessions/00000000-0000-0000-0000-000000000000/ticket/"):
        assert outsider.post(path).status_code == 404
    assert api("member").post(
        "/api/v1/tenants/acme/sessions/not-a-uuid/ticket/").status_code == 404


def test_connect_while_the_desktop_is_being_deleted_starts_afresh(api, ready_pool, run_tasks):
    member = api("member")
    first = connect(member, ready_pool, run_tasks).json()
    with scopes_disabled():
        Desktop.objects.filter(pk=first["desktop"]).update(state="deleting")

    second = connect(member, ready_pool, run_tasks)

    assert second.status_code == 200
    assert second.json()["desktop"] != first["desktop"]
    assert session_of(first).end_reason == EndReason.DESKTOP_LOST


def test_browser_tokens_are_single_use_and_expire(api, ready_pool, run_tasks, users):
    session = session_of(connect(api("member"), ready_pool, run_tasks).json())
    with run_tasks(), scopes_disabled():
        issued = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
        again = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
        for ticket in (issued.ticket, again.ticket):  # the simulated host has no VNC port
            type(ticket).objects.filter(pk=ticket.pk).update(port=5901)
    assert issued.token and issued.ticket.token_hash and issued.token not in issued.ticket.token_hash

    target = console_token_consume(token=issued.token)
    assert target is not None and (target.host, target.port) == ("127.0.0.1", 5901)
    assert console_token_consume(token=issued.token) is None  # replayed
    assert console_token_consume(token=issued.token + "x") is None  # forged
    assert console_token_consume(token="") is None

    with scopes_disabled():
        type(again.ticket).objects.filter(pk=again.ticket.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1))
    assert console_token_consume(token=again.token) is None  # expired


def test_pool_limits_are_validated(api, image):
    response = api("admin").post("/api/v1/tenants/acme/pools/", {
        "name": "Bad", "image": str(image.id), "idle_timeout_s": -5}, format="json")
    assert_error(response, 400)
    with scopes_disabled():
        assert not Pool.objects.filter(name="Bad").exists()


def test_an_admin_ending_someone_elses_session_is_recorded_as_admin(api, ready_pool, run_tasks):
    body = connect(api("member"), ready_pool, run_tasks).json()
    with run_tasks():
        response = api("admin").post(f"/api/v1/tenants/acme/sessions/{body['session']}/end/")
    assert response.status_code == 200
    assert response.json()["end_reason"] == EndReason.ADMIN
    own = connect(api("admin"), ready_pool, run_tasks).json()
    with run_tasks():
        mine = api("admin").post(f"/api/v1/tenants/acme/sessions/{own['session']}/end/")
    assert mine.json()["end_reason"] == EndReason.USER
