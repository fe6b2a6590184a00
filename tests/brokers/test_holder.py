"""The holder rule, example by example (brokers/holding.py): one holder per desktop, tickets
only to the holder, access that ends when access ends, floating desktops reset between
users. The stateful property test (test_holder_property.py) explores the same rules at
random; the sequences it found are kept here as plain tests."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from brokers.choices import EndReason, SessionState
from brokers.models import Session
from brokers.services import session_connect, session_end, session_takeover, ticket_issue
from tenants.choices import Role, TenantStatus
from tenants.models import Membership
from tenants.scoping import scopes_disabled
from tenants.members import membership_remove
from tenants.services import membership_add, tenant_set_status
from tests.api.test_slice import assert_error, connect
from vdi.choices import DesktopState, OnLogoff, OperationKind, PoolKind
from hypervisors.drivers import DriverError
from core.errors import Conflict, Forbidden, QuotaExceeded
from vdi.models import Desktop, PoolEntitlement
from vdi.services import desktop_power, pool_update


@pytest.fixture
def alice(make_user, tenant):
    user = make_user("alice")
    membership_add(tenant=tenant, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def bob(make_user, tenant):
    user = make_user("bob")
    membership_add(tenant=tenant, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def platform(run_tasks):
    """Run service calls as the platform would: across tenants, their tasks at once."""

    def call(action, *args, **kwargs):
        with scopes_disabled(), run_tasks():
            return action(*args, **kwargs)

    return call


def reload(obj):
    with scopes_disabled():
        obj.refresh_from_db()
    return obj


def live(**filters):
    with scopes_disabled():
        return list(Session.objects.filter(state__in=("pending", "ready", "connected",
                                                      "disconnected"), **filters))


@pytest.fixture
def floating(make_pool, host, run_tasks):
    with run_tasks():
        return make_pool(name="Floating", kind=PoolKind.FLOATING, min_ready=2)


@pytest.fixture
def dedicated(make_pool, host, run_tasks):
    with run_tasks():
        return make_pool(name="Dedicated", kind=PoolKind.DEDICATED, min_ready=1)


# --- takeover moves holding ---------------------------------------------------------------
def test_after_a_takeover_the_previous_user_gets_another_floating_desktop(
        floating, alice, users, platform):
    first = platform(session_connect, user=alice, pool=floating).session
    taken = platform(session_takeover, desktop=first.desktop, actor=users["admin"])

    again = platform(session_connect, user=alice, pool=floating).session

    assert again.desktop_id != first.desktop_id
    assert reload(first.desktop).assigned_user == users["admin"]
    assert [s.id for s in live(desktop=first.desktop)] == [taken.session.id]
    with pytest.raises(Forbidden) as refused:
        platform(ticket_issue, session=taken.session, user=alice)
    assert refused.value.code == "not_desktop_holder"


def test_ending_the_takeover_recycles_the_desktop_and_no_old_session_mints_tickets(
        api, floating, alice, users, platform, run_tasks):
    first = platform(session_connect, user=alice, pool=floating).session
    taken = platform(session_takeover, desktop=first.desktop, actor=users["admin"])

    platform(session_end, session=taken.session, actor=users["admin"])

    desktop = reload(first.desktop)
    assert desktop.assigned_user is None and not desktop.needs_reset  # reset, back as a spare
    for session in (first, taken.session):
        with pytest.raises(Conflict) as refused:
            platform(ticket_issue, session=reload(session), user=session.user)
        assert refused.value.code == "session_ended"


def test_a_dedicated_owner_waits_for_the_takeover_then_gets_their_desktop_back(
        dedicated, alice, users, platform):
    first = platform(session_connect, user=alice, pool=dedicated).session
    taken = platform(session_takeover, desktop=first.desktop, actor=users["admin"])
    assert reload(first.desktop).assigned_user == alice  # still hers

    with pytest.raises(Conflict) as refused:
        platform(session_connect, user=alice, pool=dedicated)
    assert refused.value.code == "desktop_taken_over"

    platform(session_end, session=taken.session, actor=users["admin"])
    back = platform(session_connect, user=alice, pool=dedicated)
    assert back.session.desktop_id == first.desktop_id and back.ticket is not None


def test_a_member_cannot_power_off_a_desktop_an_admin_took_over(dedicated, alice, users,
                                                                 platform):
    first = platform(session_connect, user=alice, pool=dedicated).session
    platform(session_takeover, desktop=first.desktop, actor=users["admin"])

    with pytest.raises(Forbidden) as refused:
        platform(desktop_power, desktop=first.desktop, kind=OperationKind.POWEROFF, actor=alice)
    assert refused.value.code == "not_desktop_holder"
    assert reload(first.desktop).state == DesktopState.RUNNING


def test_a_takeover_counts_against_the_session_quota(floating, alice, users, platform, tenant):
    """Found by the property test: a takeover of a spare opened a session past
    ``max_sessions``."""
    platform(session_connect, user=alice, pool=floating)
    type(tenant).objects.filter(pk=tenant.pk).update(max_sessions=1)
    with scopes_disabled():
        spare = Desktop.objects.filter(pool=floating, assigned_user__isnull=True,
                                       state=DesktopState.RUNNING).first()

    with pytest.raises(QuotaExceeded):
        platform(session_takeover, desktop=spare, actor=users["admin"])
    assert len(live(tenant=tenant)) == 1


def test_the_database_refuses_a_second_live_session_on_a_desktop(floating, alice, bob,
                                                                  platform):
    first = platform(session_connect, user=alice, pool=floating).session
    with scopes_disabled(), pytest.raises(IntegrityError), transaction.atomic():
        Session.objects.create(tenant=first.tenant, pool=floating, user=bob,
                               desktop=first.desktop, state=SessionState.READY)


# --- floating means non-persistent --------------------------------------------------------
@pytest.mark.parametrize("policy", [OnLogoff.RECYCLE, OnLogoff.SHUTDOWN])
def test_a_floating_desktop_is_reset_before_the_next_user_whatever_on_logoff_says(
        make_pool, host, alice, bob, users, platform, run_tasks, policy):
    with run_tasks():
        pool = make_pool(kind=PoolKind.FLOATING, min_ready=0, max_desktops=1,
                         on_logoff=policy)
    first = platform(session_connect, user=alice, pool=pool).session
    platform(session_end, session=first, actor=alice)

    second = platform(session_connect, user=bob, pool=pool).session

    assert second.desktop_id == first.desktop_id  # the pool's only desktop
    with scopes_disabled():
        resets = first.desktop.operations.filter(kind=OperationKind.RESET,
                                                 state="succeeded",
                                                 started_at__gt=reload(first).ready_at)
        assert resets.filter(started_at__lt=reload(second).created_at).exists()


def test_keep_keeps_a_floating_desktop_for_the_same_user_only(
        make_pool, host, alice, bob, platform, run_tasks):
    with run_tasks():
        pool = make_pool(kind=PoolKind.FLOATING, min_ready=0, max_desktops=2,
                         on_logoff=OnLogoff.KEEP)
    first = platform(session_connect, user=alice, pool=pool).session
    platform(session_end, session=first, actor=alice)

    assert platform(session_connect, user=alice, pool=pool).session.desktop_id == \
        first.desktop_id
    assert platform(session_connect, user=bob, pool=pool).session.desktop_id != \
        first.desktop_id


def test_a_used_floating_desktop_released_broken_is_never_claimed_unreset(
        make_pool, host, alice, bob, platform, run_tasks):
    with run_tasks():
        pool = make_pool(kind=PoolKind.FLOATING, min_ready=2, max_desktops=4)
    first = platform(session_connect, user=alice, pool=pool).session
    with scopes_disabled():
        Desktop.objects.filter(pk=first.desktop_id).update(state=DesktopState.ERROR)
    platform(session_end, session=first, actor=alice)
    with scopes_disabled():  # recovered outside any reset (e.g. seen running again)
        Desktop.objects.filter(pk=first.desktop_id).update(state=DesktopState.RUNNING)

    # bob gets another desktop; the autoscaler his Connect wakes resets what was left.
    assert platform(session_connect, user=bob, pool=pool).session.desktop_id != \
        first.desktop_id
    desktop = reload(first.desktop)
    assert (desktop.state, desktop.needs_reset) == (DesktopState.RUNNING, False)
    with scopes_disabled():
        assert desktop.operations.filter(kind=OperationKind.RESET, state="succeeded").exists()


def test_a_desktop_in_error_starts_again_only_through_a_reset(member_desktop, users,
                                                               platform):
    with scopes_disabled():
        Desktop.objects.filter(pk=member_desktop.pk).update(state=DesktopState.ERROR)
    with pytest.raises(Conflict) as refused:
        platform(desktop_power, desktop=member_desktop, kind=OperationKind.START,
                 actor=users["member"])
    assert refused.value.code == "invalid_state"
    platform(desktop_power, desktop=member_desktop, kind=OperationKind.RESET,
             actor=users["member"])
    assert reload(member_desktop).state == DesktopState.STOPPED


def test_a_reset_ends_the_sessions_on_the_desktop_first(floating, alice, users, platform):
    first = platform(session_connect, user=alice, pool=floating).session
    platform(desktop_power, desktop=first.desktop, kind=OperationKind.RESET,
             actor=users["admin"])
    assert (reload(first).state, first.end_reason) == (SessionState.ENDED, EndReason.ADMIN)


# --- access ends when access ends ---------------------------------------------------------
def test_a_suspended_tenant_gets_no_ticket_takeover_or_power_on(
        floating, member_desktop, alice, users, platform, tenant):
    session = platform(session_connect, user=alice, pool=floating).session
    platform(tenant_set_status, tenant=tenant, status=TenantStatus.SUSPENDED,
             actor=users["staff"])
    assert reload(session).state == SessionState.ENDED
    with scopes_disabled():
        Desktop.objects.filter(pk=member_desktop.pk).update(state=DesktopState.STOPPED)
    for action, kwargs in (
        (session_takeover, {"desktop": reload(session.desktop), "actor": users["admin"]}),
        (desktop_power, {"desktop": member_desktop, "kind": OperationKind.START,
                         "actor": users["admin"]}),
        (session_connect, {"user": alice, "pool": floating}),
    ):
        with pytest.raises(Conflict) as refused:
            platform(action, **kwargs)
        assert refused.value.code == "tenant_suspended", action


def test_removing_a_member_ends_their_sessions_and_releases_their_floating_desktop(
        make_pool, host, alice, users, platform, run_tasks, tenant):
    with run_tasks():
        pool = make_pool(kind=PoolKind.FLOATING, min_ready=0, on_logoff=OnLogoff.KEEP)
    session = platform(session_connect, user=alice, pool=pool).session
    with scopes_disabled():
        membership = Membership.objects.get(tenant=tenant, user=alice)

    platform(membership_remove, membership=membership, actor=users["admin"])

    assert reload(session).state == SessionState.ENDED
    desktop = reload(session.desktop)
    assert desktop.assigned_user is None and desktop.needs_reset


def test_disabling_a_pool_ends_its_sessions(floating, alice, users, platform):
    session = platform(session_connect, user=alice, pool=floating).session
    platform(pool_update, pool=floating, actor=users["admin"], enabled=False)
    assert (reload(session).state, session.end_reason) == (SessionState.ENDED,
                                                           EndReason.ADMIN)


def test_a_user_taken_off_a_pool_loses_their_session_there(floating, alice, bob, users,
                                                           platform, tenant):
    with scopes_disabled():
        PoolEntitlement.objects.create(tenant=tenant, pool=floating, user=bob)
    sessions = {user: platform(session_connect, user=user, pool=floating).session
                for user in (alice, bob)}

    platform(pool_update, pool=reload(floating), actor=users["admin"],
             entitle_all_members=False)

    assert reload(sessions[alice]).state == SessionState.ENDED
    assert reload(sessions[bob]).state != SessionState.ENDED
    with pytest.raises(Forbidden) as refused:
        platform(session_connect, user=alice, pool=reload(floating))
    assert refused.value.code == "not_entitled"


def test_ending_a_session_locks_its_consoles(member_desktop, users, platform, passwords_apply):
    pool = member_desktop.pool
    session = platform(session_connect, user=users["member"], pool=reload(pool)).session
    assert session.desktop_id == member_desktop.id
    passwords_apply.clear()

    platform(session_end, session=session, actor=users["member"])

    assert sorted(passwords_apply) == sorted([(member_desktop.name, "spice", True),
                                              (member_desktop.name, "vnc", True)])


def test_the_api_answers_the_holder_codes(api, floating, users, run_tasks):
    member = api("member")
    body = connect(member, floating, run_tasks).json()
    with run_tasks():
        api("admin").post(f"/api/v1/tenants/acme/desktops/{body['desktop']}/takeover/")
        assert_error(member.post(f"/api/v1/tenants/acme/sessions/{body['session']}/ticket/"),
                     409, "session_ended")
        assert_error(member.get(f"/api/v1/tenants/acme/sessions/{body['session']}/console.vv"),
                     409, "session_ended")


def test_a_vnc_pool_serves_no_vv_file_its_consoles_open_in_the_browser(api, make_pool, host,
                                                                      run_tasks):
    """VNC displays listen only where the console proxies reach them (QEMU cannot cut a VNC
    client when its session ends), so native clients get SPICE pools only."""
    with run_tasks():
        pool = make_pool(protocol="vnc", min_ready=1)
    member = api("member")
    body = connect(member, pool, run_tasks).json()
    with run_tasks():
        assert_error(member.get(f"/api/v1/tenants/acme/sessions/{body['session']}/console.vv"),
                     409, "browser_console_only")


def test_a_floating_desktop_that_could_not_be_made_is_released_and_the_user_gets_another(
        make_pool, host, alice, platform, run_tasks, monkeypatch):
    with run_tasks():
        pool = make_pool(kind=PoolKind.FLOATING, min_ready=0, max_desktops=3)

    def broken_define(self, xml):
        raise DriverError("the host refused the domain")

    with monkeypatch.context() as patch:
        patch.setattr("hypervisors.drivers.libvirt_driver.LibvirtDriver.define", broken_define)
        first = platform(session_connect, user=alice, pool=pool).session
    assert (reload(first).state, first.end_reason) == (SessionState.ENDED, EndReason.FAILED)
    assert reload(first.desktop).assigned_user is None

    again = platform(session_connect, user=alice, pool=pool).session
    assert again.desktop_id != first.desktop_id and reload(again).state == SessionState.READY
