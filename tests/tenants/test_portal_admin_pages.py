"""The organisation's admin pages: members and roles, quotas, usage, operations, audit.
Owners and admins only (members 403, other organisations 404), CSRF on every form, the
services' refusals shown on the page."""

import uuid
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from tenants.models import AuditEvent, Invitation, Membership, MonthlyUsage, UsageEvent
from tenants.scoping import scopes_disabled
from tenants.audit import audit_record
from vdi.models import Operation

MEMBERS = "/t/acme/members/"
ADMIN_PAGES = [MEMBERS, "/t/acme/quotas/", "/t/acme/usage/", "/t/acme/operations/",
               "/t/acme/audit/"]


def membership(tenant, username):
    with scopes_disabled():
        return Membership.objects.filter(tenant=tenant, user__username=username).first()


# --- who may open them ----------------------------------------------------------------------
@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_owners_admins_and_staff_open_the_admin_pages(logged_in, url):
    for role in ("owner", "admin", "staff"):
        response = logged_in(role).get(url)
        assert response.status_code == 200, (role, url)
        assert 'aria-label="Administration"' in response.content.decode()


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_members_get_the_403_page_and_outsiders_404(logged_in, url):
    response = logged_in("member").get(url)
    assert response.status_code == 403
    assert "You can't open this page" in response.content.decode()
    response = logged_in("outsider").get(url)
    assert response.status_code == 404
    assert "This page doesn't exist" in response.content.decode()


def test_the_admin_nav_is_for_admins_only(logged_in):
    assert f'href="{MEMBERS}"' in logged_in("admin").get("/t/acme/").content.decode()
    assert f'href="{MEMBERS}"' not in logged_in("member").get("/t/acme/").content.decode()


# --- members and roles ----------------------------------------------------------------------
def test_the_member_list_shows_everyone_with_role_forms(logged_in, users, tenant):
    html = logged_in("admin").get(MEMBERS).content.decode()
    for name in ("owner", "admin", "member"):
        assert f"{name}@example.com" in html
    assert "outsider" not in html  # another organisation's
    assert '<label for="id_who">Username or e-mail address' in html
    assert '<label for="id_role">Role' in html
    m = membership(tenant, "member")
    assert f'<label for="role-{m.pk}" class="visually-hidden">Role of member</label>' in html


def invitation_of(tenant, addressee):
    with scopes_disabled():
        return (Invitation.objects.filter(tenant=tenant).filter(username=addressee)
                | Invitation.objects.filter(tenant=tenant, email=addressee)).first()


@pytest.mark.parametrize("who", ["newbie", "nobody"])
def test_inviting_by_username_says_the_same_whether_or_not_the_account_exists(
        logged_in, make_user, tenant, who):
    make_user("newbie")
    response = logged_in("admin").post(MEMBERS, {"who": who, "role": "member"}, follow=True)
    html = response.content.decode()
    assert f"{who} is invited as member: they become a member once they accept." in html
    assert f"<th scope=\"row\">{who}</th>" in html  # among the pending invitations
    assert invitation_of(tenant, who).state == "pending"
    assert membership(tenant, who) is None  # until they accept


def test_inviting_by_email_creates_the_account_and_mails_a_link(
        logged_in, tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in("owner").post(MEMBERS, {"who": "Jane.Doe@example.org",
                                                     "role": "admin"}, follow=True)
    assert "Jane.Doe@example.org is invited as admin" in response.content.decode()
    assert membership(tenant, "jane.doe") is None
    assert get_user_model().objects.filter(username="jane.doe").exists()
    [message] = mail.outbox
    assert message.to == ["Jane.Doe@example.org"]
    assert f"/invitations/{invitation_of(tenant, 'Jane.Doe@example.org').pk}/" in message.body


@pytest.mark.parametrize("data,field,message", [
    ({"who": "", "role": "member"}, "who", "This field is required."),
    ({"who": "n" * 151, "role": "member"}, "who", "Give a username of 1 to 150 characters."),
    ({"who": "not-an-address@", "role": "member"}, "who", "Enter a valid email address."),
    ({"who": "newbie", "role": "emperor"}, "role", "Select a valid choice."),
])
def test_the_add_form_shows_what_is_wrong_next_to_the_field(logged_in, make_user, tenant,
                                                            data, field, message):
    make_user("newbie")
    response = logged_in("admin").post(MEMBERS, data)
    html = response.content.decode()
    assert response.status_code == 400
    assert message in html and "has-error" in html
    assert html.index(message) > html.index(f'id="id_{field}"')
    assert membership(tenant, "newbie") is None and invitation_of(tenant, "newbie") is None


def test_adding_someone_twice_or_granting_owner_as_admin_is_refused_with_the_reason(
        logged_in, make_user, tenant):
    make_user("newbie")
    client = logged_in("admin")
    html = client.post(MEMBERS, {"who": "member", "role": "member"}).content.decode()
    assert "member is already a member of this organisation." in html
    html = client.post(MEMBERS, {"who": "newbie", "role": "owner"}).content.decode()
    assert "Only an owner may grant or change the owner role." in html
    assert membership(tenant, "newbie") is None and invitation_of(tenant, "newbie") is None


def test_changing_a_role(logged_in, tenant):
    m = membership(tenant, "member")
    response = logged_in("owner").post(f"/t/acme/members/{m.pk}/role/", {"role": "admin"},
                                       follow=True)
    assert "member is now admin." in response.content.decode()
    assert membership(tenant, "member").role == "admin"


def test_the_last_owner_can_be_neither_demoted_nor_removed(logged_in, tenant):
    owner = membership(tenant, "owner")
    client = logged_in("owner")
    response = client.post(f"/t/acme/members/{owner.pk}/role/", {"role": "member"}, follow=True)
    assert "last owner can&#x27;t be demoted" in response.content.decode()
    response = client.post(f"/t/acme/members/{owner.pk}/remove/", follow=True)
    assert "last owner can&#x27;t be removed" in response.content.decode()
    assert membership(tenant, "owner").role == "owner"


def test_removing_a_member_after_confirming(logged_in, tenant):
    m = membership(tenant, "member")
    client = logged_in("admin")
    confirm = client.get(f"/t/acme/members/{m.pk}/remove/").content.decode()
    assert "Remove member from Acme?" in confirm and 'name="csrfmiddlewaretoken"' in confirm
    response = client.post(f"/t/acme/members/{m.pk}/remove/", follow=True)
    assert "member is no longer a member." in response.content.decode()
    assert membership(tenant, "member") is None
    assert get_user_model().objects.filter(username="member").exists()


def test_member_forms_need_the_csrf_token(users, tenant, make_user):
    make_user("newbie")
    m = membership(tenant, "member")
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["owner"])
    assert client.post(MEMBERS, {"who": "newbie", "role": "member"}).status_code == 403
    assert client.post(f"/t/acme/members/{m.pk}/role/", {"role": "admin"}).status_code == 403
    assert client.post(f"/t/acme/members/{m.pk}/remove/").status_code == 403
    assert membership(tenant, "newbie") is None and membership(tenant, "member").role == "member"


def test_members_of_another_organisation_are_404(logged_in, users, other_tenant):
    theirs = membership(other_tenant, "outsider")
    client = logged_in("owner")
    assert client.post(f"/t/acme/members/{theirs.pk}/role/", {"role": "member"}).status_code \
        == 404
    assert client.get(f"/t/acme/members/{theirs.pk}/remove/").status_code == 404
    assert client.post(f"/t/acme/members/{theirs.pk}/remove/").status_code == 404
    assert membership(other_tenant, "outsider").role == "admin"


def test_members_cannot_change_roles(logged_in, tenant):
    m = membership(tenant, "admin")
    assert logged_in("member").post(f"/t/acme/members/{m.pk}/role/",
                                    {"role": "member"}).status_code == 403
    assert membership(tenant, "admin").role == "admin"


# --- quotas ---------------------------------------------------------------------------------
def test_quotas_show_use_against_each_limit_as_bars(logged_in, tenant, member_desktop):
    tenant.max_desktops, tenant.max_vcpus, tenant.max_memory_mb = 4, 8, None
    tenant.save()
    html = logged_in("admin").get("/t/acme/quotas/").content.decode()
    assert 'id="meter-max_desktops" min="0" max="4" value="1"' in html
    assert 'id="meter-max_vcpus" min="0" max="8" value="1"' in html
    assert 'id="meter-max_memory_mb"' not in html  # unlimited: no bar
    assert "256</strong> MiB in use · <span data-field=\"limit\">no limit" in html
    assert "1</strong> of <span data-field=\"limit\">4</span> used (25%)" in html


def test_a_reached_quota_says_so(logged_in, tenant, member_desktop):
    tenant.max_desktops = 1
    tenant.save()
    assert "limit reached" in logged_in("admin").get("/t/acme/quotas/").content.decode()


# --- usage ----------------------------------------------------------------------------------
def test_usage_shows_a_chart_of_twelve_months_and_the_months_figures(logged_in, tenant):
    start = datetime(2025, 1, 10, 8, tzinfo=dt_timezone.utc)
    subject = uuid.uuid4()
    with scopes_disabled():
        UsageEvent.objects.create(tenant=tenant, subject="desktop", subject_id=subject,
                                  state="running", active=True, vcpus=2, memory_mb=1024,
                                  at=start)
        UsageEvent.objects.create(tenant=tenant, subject="desktop", subject_id=subject,
                                  state="stopped", active=False, at=start + timedelta(hours=3))

    html = logged_in("admin").get("/t/acme/usage/?month=2025-01").content.decode()

    assert "January 2025" in html
    assert html.count('class="bar bar-desktops') == 12
    assert html.count('class="bar bar-sessions') == 12
    assert '<td data-field="desktop_hours">3.00</td>' in html
    assert '<td data-field="vcpu_hours">6.00</td>' in html
    assert '<td data-field="memory_gb_hours">3.00</td>' in html
    assert 'href="?month=2024-02"' in html and 'href="?month=2025-01"' in html
    assert "style=" not in html  # sizes are SVG attributes


def test_usage_defaults_to_this_month(logged_in):
    html = logged_in("admin").get("/t/acme/usage/").content.decode()
    assert f'href="?month={datetime.now(dt_timezone.utc):%Y-%m}"' in html and "(so far)" in html


def test_a_past_month_comes_from_the_stored_figures(logged_in, tenant):
    with scopes_disabled():
        MonthlyUsage.objects.create(
            tenant=tenant, month=datetime(2024, 3, 1).date(), desktop_hours=12.5,
            session_hours=4, vcpu_hours=25, memory_gb_hours=6.25, peak_sessions=3,
            computed_at=datetime(2024, 4, 1, 0, 10, tzinfo=dt_timezone.utc))
    html = logged_in("admin").get("/t/acme/usage/?month=2024-03").content.decode()
    assert "March 2024" in html and '<td data-field="desktop_hours">12.50</td>' in html
    assert '<td data-field="peak_sessions">3</td>' in html


@pytest.mark.parametrize("month", ["2024-13", "soon", "2999-01"])
def test_a_bad_month_is_explained(logged_in, month):
    response = logged_in("admin").get(f"/t/acme/usage/?month={month}")
    assert response.status_code == 400
    assert 'role="alert" id="month-error"' in response.content.decode()


# --- operations -----------------------------------------------------------------------------
def test_operations_newest_first_and_the_failed_filter(logged_in, member_desktop, tenant):
    with scopes_disabled():
        Operation.objects.create(tenant=tenant, kind="start", desktop=member_desktop,
                                 state="failed", error="no host has room for 2 vCPUs")
    client = logged_in("admin")
    html = client.get("/t/acme/operations/").content.decode()
    # Tenant admins read the failure in plain words; libvirt's are for platform staff.
    failure = "The desktop could not be started; the platform team has the details."
    assert failure in html and "Provision" in html and "no host has room" not in html
    assert html.index(failure) < html.index("Provision")  # newest first
    failed = client.get("/t/acme/operations/?failed=1").content.decode()
    assert failure in failed and "Provision" not in failed
    staff = logged_in("staff").get("/t/acme/operations/?failed=1").content.decode()
    assert "no host has room for 2 vCPUs" in staff


def test_another_organisations_operations_are_not_shown(logged_in, member_desktop,
                                                        other_tenant):
    html = logged_in("outsider").get("/t/globex/operations/").content.decode()
    assert member_desktop.name not in html and "No operations yet" in html


def test_long_lists_are_paginated(logged_in, member_desktop, tenant):
    with scopes_disabled():
        Operation.objects.bulk_create([
            Operation(tenant=tenant, kind="reboot", desktop=member_desktop, state="succeeded")
            for _ in range(60)])
    client = logged_in("admin")
    first = client.get("/t/acme/operations/").content.decode()
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    assert "Page 2 of 2" in client.get("/t/acme/operations/?page=2").content.decode()


# --- audit ----------------------------------------------------------------------------------
def test_the_audit_trail_shows_who_did_what(logged_in, users, tenant, other_tenant):
    audit_record(tenant=tenant, actor=users["owner"], action="member.role",
                 target=membership(tenant, "member"), details={"to": "admin"},
                 source_ip="192.0.2.7")
    with scopes_disabled():
        audit_record(tenant=other_tenant, actor=users["outsider"], action="member.remove",
                     target=membership(other_tenant, "outsider"))
    html = logged_in("admin").get("/t/acme/audit/").content.decode()
    assert "<code>member.role</code>" in html and "192.0.2.7" in html and "owner" in html
    assert "member.remove" not in html  # another organisation's


def test_audit_result_source_and_request_id_are_shown_when_recorded(logged_in, tenant):
    AuditEvent(tenant=tenant, action="member.role", object_type="tenants.membership",
               object_id="1", result="denied", source="portal", request_id="req-42").save()
    html = logged_in("admin").get("/t/acme/audit/").content.decode()
    assert ">Denied</span>" in html and ">Portal</small>" in html and "req-42" in html
