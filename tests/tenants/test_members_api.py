"""Members of an organisation through the REST API: list, add, invite by e-mail, change roles,
remove; the owner rules; every write audited."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants.models import AuditEvent, Membership
from tenants.scoping import scopes_disabled
from tenants.services import membership_add
from tests.api.test_slice import assert_error

MEMBERS = "/api/v1/tenants/acme/members/"
NEW_PASSWORD = "plum tractor seventeen lanterns"
LINK = re.compile(r"https?://testserver/accounts/reset/[^/\s]+/[^/\s]+/")


def membership(tenant, user) -> Membership:
    with scopes_disabled():
        return Membership.objects.get(tenant=tenant, user=user)


def member_url(m: Membership) -> str:
    return f"{MEMBERS}{m.id}/"


def roles(tenant) -> dict[str, str]:
    with scopes_disabled():
        return dict(Membership.objects.filter(tenant=tenant)
                    .values_list("user__username", "role"))


def audit(tenant, action=None) -> list[AuditEvent]:
    """The members' changes in the tenant's trail (refusals: tests/tenants/test_audit.py)."""
    with scopes_disabled():
        events = AuditEvent.objects.filter(tenant=tenant, action__startswith="member.",
                                           result="ok").select_related("actor")
        if action:
            events = events.filter(action=action)
        return list(events.order_by("created_at"))


def user_count() -> int:
    return get_user_model().objects.count()


@pytest.fixture
def dave(make_user):
    """An existing user who is in no organisation yet."""
    return make_user("dave")


# --- reading ------------------------------------------------------------------------------
def test_any_member_lists_and_reads_members(api, users, tenant):
    client = api("member")

    response = client.get(MEMBERS)

    assert response.status_code == 200, response.content
    body = response.json()
    assert {"count", "next", "previous", "results"} <= set(body)
    assert body["count"] == 3
    assert {(m["username"], m["role"]) for m in body["results"]} == {
        ("owner", "owner"), ("admin", "admin"), ("member", "member")}
    first = body["results"][0]
    assert set(first) == {"id", "username", "email", "role", "created_at"}
    admins = client.get(MEMBERS, {"role": "admin"}).json()
    assert [m["username"] for m in admins["results"]] == ["admin"]
    assert client.get(MEMBERS, {"limit": 1}).json()["next"]

    detail = client.get(member_url(membership(tenant, users["owner"])))
    assert detail.status_code == 200
    assert detail.json()["username"] == "owner" and detail.json()["email"] == "owner@example.com"


def test_outsiders_and_other_tenants_members_are_404(api, users, tenant, other_tenant):
    outsider = api("outsider")  # an admin of globex
    acme_member = membership(tenant, users["member"])
    globex_admin = membership(other_tenant, users["outsider"])

    assert_error(outsider.get(MEMBERS), 404)
    assert_error(outsider.get(member_url(acme_member)), 404)
    assert_error(outsider.patch(member_url(acme_member), {"role": "admin"}, format="json"), 404)
    assert_error(outsider.delete(member_url(acme_member)), 404)
    assert_error(outsider.post(MEMBERS, {"username": "outsider", "role": "owner"},
                               format="json"), 404)
    # A globex membership id through either tenant's URL: another tenant's row is not there.
    assert_error(outsider.get(f"/api/v1/tenants/globex/members/{acme_member.id}/"), 404)
    owner = api("owner")
    assert_error(owner.get(member_url(globex_admin)), 404)
    assert_error(owner.patch(member_url(globex_admin), {"role": "member"}, format="json"), 404)
    assert_error(owner.delete(member_url(globex_admin)), 404)
    assert_error(owner.get(f"{MEMBERS}{uuid.uuid4()}/"), 404)
    assert roles(other_tenant) == {"outsider": "admin"}
    assert roles(tenant)["member"] == "member"
    assert audit(tenant) == [] and audit(other_tenant) == []


def test_anonymous_gets_401(api, users, tenant):
    client = api()
    assert_error(client.get(MEMBERS), 401)
    assert_error(client.post(MEMBERS, {"username": "member", "role": "owner"}, format="json"), 401)


# --- adding an existing user --------------------------------------------------------------
def test_admin_adds_an_existing_user_by_username(api, users, tenant, dave, mailoutbox):
    response = api("admin").post(MEMBERS, {"username": "dave", "role": "member"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["username"] == "dave" and body["role"] == "member"
    assert body["id"] == str(membership(tenant, dave).id)
    assert mailoutbox == []
    [event] = audit(tenant)
    assert (event.action, event.actor, event.object_id) == ("member.add", users["admin"], body["id"])
    assert event.details == {"username": "dave", "role": "member"}
    # dave may now use the organisation
    dave_client = APIClient()
    dave_client.force_authenticate(dave)
    assert dave_client.get(MEMBERS).status_code == 200


@pytest.mark.parametrize("username", ["nobody", "dav", "dave2"])
def test_unknown_username_is_a_field_error(api, users, tenant, dave, username):
    body = assert_error(api("owner").post(MEMBERS, {"username": username, "role": "member"},
                                          format="json"), 400, "invalid")
    assert body["details"] == {"username": ["No such user."]}
    assert len(roles(tenant)) == 3 and audit(tenant) == []


def test_adding_a_member_again_is_a_conflict(api, users, tenant, mailoutbox):
    owner = api("owner")
    again = owner.post(MEMBERS, {"username": "member", "role": "admin"}, format="json")
    assert_error(again, 409, "already_member")
    by_email = owner.post(MEMBERS, {"email": "member@example.com", "role": "admin"},
                          format="json")
    assert_error(by_email, 409, "already_member")
    assert roles(tenant)["member"] == "member"
    assert audit(tenant) == [] and mailoutbox == []


# --- inviting by e-mail -------------------------------------------------------------------
def test_invite_creates_an_account_and_the_emailed_link_sets_its_password(
        api, users, tenant, mailoutbox, client, django_capture_on_commit_callbacks):
    before = user_count()
    with django_capture_on_commit_callbacks(execute=True):
        response = api("admin").post(MEMBERS, {"email": "Jane.Doe@Example.COM", "role": "member"},
                                     format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["username"] == "jane.doe" and body["role"] == "member"
    assert body["email"] == "Jane.Doe@example.com"
    assert user_count() == before + 1
    jane = get_user_model().objects.get(username="jane.doe")
    assert not jane.has_usable_password()
    assert roles(tenant)["jane.doe"] == "member"

    [mail] = mailoutbox
    assert mail.to == ["Jane.Doe@example.com"]
    assert "Acme" in mail.subject
    assert "jane.doe" in mail.body
    link = LINK.search(mail.body).group(0)
    token = link.rstrip("/").rsplit("/", 1)[1]

    [event] = audit(tenant)
    assert event.action == "member.invite" and event.actor == users["admin"]
    assert event.details == {"username": "jane.doe", "role": "member",
                             "email": "Jane.Doe@example.com", "account_created": True,
                             "link_sent": True}
    assert token not in json.dumps(event.details)

    # Follow the link as the invitee would: Django swaps the token for a session and
    # redirects to the form.
    landing = client.get(link)
    assert landing.status_code == 302
    form = client.get(landing["Location"])
    assert form.status_code == 200 and b"new_password1" in form.content
    assert b"jane.doe" in form.content
    done = client.post(landing["Location"], {"new_password1": NEW_PASSWORD,
                                             "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    assert client.get(done["Location"]).status_code == 200

    jane.refresh_from_db()
    assert jane.check_password(NEW_PASSWORD)
    login = APIClient().post("/api/v1/auth/token/",
                             {"username": "jane.doe", "password": NEW_PASSWORD}, format="json")
    assert login.status_code == 200, login.content
    jane_client = APIClient()
    jane_client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    assert jane_client.get(MEMBERS).json()["count"] == 4

    # The link works once.
    client.logout()
    reused = client.get(link, follow=True)
    assert b"new_password1" not in reused.content and b"Link not valid" in reused.content


def test_an_invited_username_is_made_unique(api, users, tenant, mailoutbox,
                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api("owner").post(MEMBERS, {"email": "Member@elsewhere.org", "role": "admin"},
                                     format="json")
    assert response.status_code == 201, response.content
    assert response.json()["username"] == "member-2"
    assert roles(tenant)["member-2"] == "admin" and roles(tenant)["member"] == "member"
    assert len(mailoutbox) == 1


def test_inviting_an_existing_users_address_adds_them(api, users, tenant, dave, mailoutbox,
                                                      django_capture_on_commit_callbacks):
    before = user_count()
    with django_capture_on_commit_callbacks(execute=True):
        response = api("admin").post(MEMBERS, {"email": "DAVE@example.com", "role": "member"},
                                     format="json")

    assert response.status_code == 201, response.content
    assert response.json()["username"] == "dave"
    assert user_count() == before
    assert roles(tenant)["dave"] == "member"
    dave.refresh_from_db()
    assert dave.has_usable_password()
    assert mailoutbox == []  # dave has a password: nothing to set
    [event] = audit(tenant, "member.invite")
    assert event.details["account_created"] is False and event.details["link_sent"] is False


# --- who may write ------------------------------------------------------------------------
def test_a_member_cannot_manage_members(api, users, tenant, dave, mailoutbox):
    client = api("member")
    assert_error(client.post(MEMBERS, {"username": "dave", "role": "member"}, format="json"), 403)
    assert_error(client.post(MEMBERS, {"email": "new@example.com", "role": "member"},
                             format="json"), 403)
    admin = membership(tenant, users["admin"])
    assert_error(client.patch(member_url(admin), {"role": "member"}, format="json"), 403)
    assert_error(client.delete(member_url(admin)), 403)
    assert roles(tenant) == {"owner": "owner", "admin": "admin", "member": "member"}
    assert not get_user_model().objects.filter(email="new@example.com").exists()
    assert audit(tenant) == [] and mailoutbox == []


def test_only_an_owner_grants_or_changes_the_owner_role(api, users, tenant, dave):
    admin = api("admin")
    owner_row = membership(tenant, users["owner"])
    member_row = membership(tenant, users["member"])

    assert_error(admin.post(MEMBERS, {"username": "dave", "role": "owner"}, format="json"), 403)
    assert_error(admin.patch(member_url(member_row), {"role": "owner"}, format="json"), 403)
    assert_error(admin.patch(member_url(owner_row), {"role": "member"}, format="json"), 403)
    assert_error(admin.delete(member_url(owner_row)), 403)
    assert roles(tenant) == {"owner": "owner", "admin": "admin", "member": "member"}
    assert audit(tenant) == []

    # An admin manages the other roles.
    promoted = admin.patch(member_url(member_row), {"role": "admin"}, format="json")
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    # An owner grants the owner role.
    owner = api("owner")
    granted = owner.post(MEMBERS, {"username": "dave", "role": "owner"}, format="json")
    assert granted.status_code == 201, granted.content
    assert roles(tenant) == {"owner": "owner", "admin": "admin", "member": "admin",
                             "dave": "owner"}


# --- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("payload,field,says", [
    ({"role": "member"}, "non_field_errors", "either"),
    ({"username": "dave", "email": "dave@example.com", "role": "member"}, "non_field_errors",
     "either"),
    ({"username": "dave"}, "role", "required"),
    ({"username": "dave", "role": "boss"}, "role", "not a valid choice"),
    ({"username": "dave", "role": None}, "role", "null"),
    ({"username": "dave", "role": ["owner"]}, "role", "not a valid choice"),
    ({"email": "not-an-email", "role": "member"}, "email", "valid email"),
    ({"email": "a@b@example.com", "role": "member"}, "email", "valid email"),
    ({"email": "", "role": "member"}, "email", "blank"),
    ({"email": "x" * 250 + "@example.com", "role": "member"}, "email", "254"),
    ({"username": "d" * 151, "role": "member"}, "username", "150"),
    ({"username": "", "role": "member"}, "username", "blank"),
    ({"username": 42, "email": None, "role": "member"}, "email", "null"),
])
def test_bad_input_is_a_400_and_changes_nothing(api, users, tenant, dave, mailoutbox, payload,
                                                field, says,
                                                django_capture_on_commit_callbacks):
    before = user_count()
    with django_capture_on_commit_callbacks(execute=True):
        response = api("owner").post(MEMBERS, payload, format="json")
    body = assert_error(response, 400, "invalid")
    assert field in body["details"], body
    assert says in " ".join(body["details"][field]).lower(), body
    assert user_count() == before
    assert roles(tenant) == {"owner": "owner", "admin": "admin", "member": "member"}
    assert audit(tenant) == [] and mailoutbox == []


@pytest.mark.parametrize("payload", [{}, {"role": "boss"}, {"role": ""}, {"role": None}])
def test_bad_role_change_is_a_400_and_changes_nothing(api, users, tenant, payload):
    response = api("owner").patch(member_url(membership(tenant, users["member"])), payload,
                                  format="json")
    assert "role" in assert_error(response, 400, "invalid")["details"]
    assert roles(tenant)["member"] == "member" and audit(tenant) == []


def test_put_is_not_offered(api, users, tenant):
    response = api("owner").put(member_url(membership(tenant, users["member"])),
                                {"role": "admin"}, format="json")
    assert_error(response, 405)


# --- the last owner -----------------------------------------------------------------------
def test_the_last_owner_can_be_neither_demoted_nor_removed(api, users, tenant):
    owner = api("owner")
    own = membership(tenant, users["owner"])

    assert_error(owner.patch(member_url(own), {"role": "admin"}, format="json"), 409, "last_owner")
    assert_error(owner.delete(member_url(own)), 409, "last_owner")
    assert roles(tenant)["owner"] == "owner" and audit(tenant) == []

    # With a second owner, the first may step down.
    admin_row = membership(tenant, users["admin"])
    assert owner.patch(member_url(admin_row), {"role": "owner"}, format="json").status_code == 200
    stepped_down = owner.patch(member_url(own), {"role": "admin"}, format="json")
    assert stepped_down.status_code == 200, stepped_down.content
    assert roles(tenant) == {"owner": "admin", "admin": "owner", "member": "member"}
    # ... and now the former admin is the last owner.
    assert_error(api("admin").delete(member_url(admin_row)), 409, "last_owner")


# --- removing -----------------------------------------------------------------------------
def test_admin_removes_a_member_and_the_account_stays(api, users, tenant):
    member_row = membership(tenant, users["member"])
    member_client = api("member")

    response = api("admin").delete(member_url(member_row))

    assert response.status_code == 204, response.content
    assert "member" not in roles(tenant)
    assert get_user_model().objects.filter(username="member").exists()
    assert_error(member_client.get(MEMBERS), 404)  # no longer in the organisation
    [event] = audit(tenant)
    assert (event.action, event.actor, event.object_id) == (
        "member.remove", users["admin"], str(member_row.id))
    assert event.details == {"username": "member", "role": "member"}
    assert_error(api("admin").delete(member_url(member_row)), 404)


# --- audit and idempotency ----------------------------------------------------------------
def test_every_write_is_audited_and_a_no_op_is_not(api, users, tenant, dave, mailoutbox,
                                                   django_capture_on_commit_callbacks):
    owner = api("owner")
    with django_capture_on_commit_callbacks(execute=True):
        added = owner.post(MEMBERS, {"username": "dave", "role": "member"}, format="json").json()
        invited = owner.post(MEMBERS, {"email": "eve@example.org", "role": "admin"},
                             format="json").json()
    assert owner.patch(f"{MEMBERS}{added['id']}/", {"role": "admin"},
                       format="json").status_code == 200
    assert owner.patch(f"{MEMBERS}{added['id']}/", {"role": "admin"},
                       format="json").status_code == 200  # unchanged: not a write
    assert owner.delete(f"{MEMBERS}{invited['id']}/").status_code == 204

    events = audit(tenant)
    assert [(e.action, e.object_id) for e in events] == [
        ("member.add", added["id"]), ("member.invite", invited["id"]),
        ("member.role", added["id"]), ("member.remove", invited["id"])]
    assert all(e.actor == users["owner"] and e.source_ip == "127.0.0.1" for e in events)
    assert events[2].details == {"username": "dave", "from": "member", "to": "admin"}
    # No secrets: the e-mailed link's token is nowhere in the trail.
    token = LINK.search(mailoutbox[0].body).group(0).rstrip("/").rsplit("/", 1)[1]
    assert all(token not in json.dumps(e.details) for e in events)


def test_a_retried_invitation_is_replayed_not_repeated(api, users, tenant, mailoutbox,
                                                       django_capture_on_commit_callbacks):
    owner = api("owner")
    with django_capture_on_commit_callbacks(execute=True):
        first = owner.post(MEMBERS, {"email": "zoe@example.org", "role": "member"},
                           format="json", HTTP_IDEMPOTENCY_KEY="invite-zoe")
        again = owner.post(MEMBERS, {"email": "zoe@example.org", "role": "member"},
                           format="json", HTTP_IDEMPOTENCY_KEY="invite-zoe")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert get_user_model().objects.filter(email="zoe@example.org").count() == 1
    assert len(mailoutbox) == 1 and len(audit(tenant, "member.invite")) == 1


def test_a_user_who_never_set_a_password_gets_a_fresh_link_when_invited_again(
        api, users, tenant, other_tenant, mailoutbox, django_capture_on_commit_callbacks):
    invitee = get_user_model()(username="pat", email="pat@example.org")
    invitee.set_unusable_password()
    invitee.save()
    membership_add(tenant=other_tenant, user=invitee)
    with django_capture_on_commit_callbacks(execute=True):
        response = api("owner").post(MEMBERS, {"email": "pat@example.org", "role": "member"},
                                     format="json")
    assert response.status_code == 201 and response.json()["username"] == "pat"
    [mail] = mailoutbox
    assert mail.to == ["pat@example.org"] and LINK.search(mail.body)
