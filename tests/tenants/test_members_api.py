"""Members of an organisation through the REST API: list, invite (by username or e-mail),
change roles, remove; the owner rules; every write audited. Inviting answers the same
whether or not an account has the username or address; what the invited person does with
the invitation is in test_invitations.py."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants import events
from tenants.models import AuditEvent, Invitation, Membership
from tenants.scoping import scopes_disabled
from tenants.services import membership_add
from tests.api.test_slice import assert_error

MEMBERS = "/api/v1/tenants/acme/members/"
NEW_PASSWORD = "plum tractor seventeen lanterns"
LINK = re.compile(r"https?://testserver/invitations/([0-9a-f-]{36})/([A-Za-z0-9_-]+)/")
INVITATION_FIELDS = {"id", "state", "role", "username", "email", "invited_by", "created_at",
                     "expires_at", "accepted_at"}


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


def deliveries() -> list[AuditEvent]:
    """The platform trail's word on whom each invitation reached (staff only)."""
    with scopes_disabled():
        return list(AuditEvent.objects.filter(tenant=None, action="invitation.deliver")
                    .order_by("created_at"))


def invitations(tenant) -> list[Invitation]:
    with scopes_disabled():
        return list(Invitation.objects.filter(tenant=tenant).select_related("user")
                    .order_by("created_at"))


def user_count() -> int:
    return get_user_model().objects.count()


def client_of(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def accept(user, invitation_id) -> None:
    response = client_of(user).post(f"/api/v1/invitations/{invitation_id}/accept/")
    assert response.status_code == 200, response.content


@pytest.fixture
def dave(make_user):
    """An existing user who is in no organisation yet."""
    return make_user("dave")


@pytest.fixture
def send_mail(django_capture_on_commit_callbacks):
    """E-mails go once the transaction commits: inside this block they really go."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


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
    assert audit(tenant) == [] and audit(other_tenant) == [] and invitations(tenant) == []


def test_anonymous_gets_401(api, users, tenant):
    client = api()
    assert_error(client.get(MEMBERS), 401)
    assert_error(client.post(MEMBERS, {"username": "member", "role": "owner"}, format="json"), 401)


# --- inviting by username -----------------------------------------------------------------
def test_inviting_an_existing_user_by_username_sends_an_invitation_to_accept(
        api, users, tenant, dave, mailoutbox, send_mail):
    with send_mail():
        response = api("admin").post(MEMBERS, {"username": "dave", "role": "member"},
                                     format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == INVITATION_FIELDS
    assert (body["state"], body["role"], body["username"], body["email"], body["invited_by"]) \
        == ("pending", "member", "dave", "", "admin")
    assert "dave" not in roles(tenant)  # not a member until dave accepts
    [invitation] = invitations(tenant)
    assert str(invitation.id) == body["id"] and invitation.user == dave
    [mail] = mailoutbox  # to dave's own address, which the inviter never sees
    assert mail.to == ["dave@example.com"] and "Acme" in mail.subject
    assert LINK.search(mail.body).group(1) == body["id"]
    [event] = audit(tenant)
    assert (event.action, event.actor, event.object_id) == ("member.invite", users["admin"],
                                                            body["id"])
    assert event.details == {"username": "dave", "role": "member", "renewed": False}

    accept(dave, body["id"])

    assert roles(tenant)["dave"] == "member"
    assert client_of(dave).get(MEMBERS).status_code == 200


def test_an_unknown_username_gets_the_same_answer_and_nothing_else(api, users, tenant, dave,
                                                                   mailoutbox, send_mail):
    owner = api("owner")
    with send_mail():
        known = owner.post(MEMBERS, {"username": "dave", "role": "member"}, format="json")
        before = user_count()
        unknown = owner.post(MEMBERS, {"username": "nobody", "role": "member"}, format="json")

    assert unknown.status_code == known.status_code == 202, unknown.content
    differing = {"id", "username", "created_at", "expires_at"}
    assert set(unknown.json()) == set(known.json())
    assert {k: v for k, v in unknown.json().items() if k not in differing} == \
        {k: v for k, v in known.json().items() if k not in differing}
    assert unknown.json()["username"] == "nobody" and unknown.json()["state"] == "pending"
    # Nothing else happened: no account, no member, no e-mail.
    assert user_count() == before and len(roles(tenant)) == 3
    assert [m.to for m in mailoutbox] == [["dave@example.com"]]
    placeholder = invitations(tenant)[1]
    assert placeholder.user is None and placeholder.username == "nobody"
    # The organisation's trail tells the two apart no better than the answer did ...
    known_entry, unknown_entry = audit(tenant, "member.invite")
    assert (known_entry.result, unknown_entry.result) == ("ok", "ok")
    assert unknown_entry.details == {"username": "nobody", "role": "member", "renewed": False}
    assert set(unknown_entry.details) == set(known_entry.details)
    # ... and its admins see both in the same way (the platform's trail is not theirs).
    trail = owner.get("/api/v1/tenants/acme/audit/", {"action": "member.invite"}).json()
    assert [e["result"] for e in trail["results"]] == ["ok", "ok"]
    assert owner.get("/api/v1/tenants/acme/audit/",
                     {"action": "invitation.deliver"}).json()["count"] == 0
    # Only platform staff learn which invitation reached nobody, and why.
    reached, refused = deliveries()
    assert (reached.result, reached.details["account"]) == ("ok", "existing")
    assert refused.result == "rejected" and refused.object_id == unknown.json()["id"]
    assert refused.details["error"]["code"] == "no_such_user"
    assert refused.details["tenant"] == "acme" and refused.details["account"] == "none"


def test_an_account_given_the_name_later_does_not_get_the_invitation(api, users, tenant,
                                                                     make_user):
    response = api("owner").post(MEMBERS, {"username": "latecomer", "role": "admin"},
                                 format="json")
    assert response.status_code == 202
    latecomer = make_user("latecomer")

    mine = client_of(latecomer)
    assert mine.get("/api/v1/invitations/").json()["count"] == 0
    assert_error(mine.post(f"/api/v1/invitations/{response.json()['id']}/accept/"), 404)
    assert "latecomer" not in roles(tenant)


def test_an_inactive_account_is_invited_as_if_it_did_not_exist(api, users, tenant, make_user,
                                                               mailoutbox, send_mail):
    make_user("gone", is_active=False)
    with send_mail():
        response = api("owner").post(MEMBERS, {"username": "gone", "role": "member"},
                                     format="json")
    assert response.status_code == 202
    assert invitations(tenant)[0].user is None and mailoutbox == []
    assert deliveries()[0].details["account"] == "none"


def test_adding_a_member_again_is_a_conflict(api, users, tenant, mailoutbox, send_mail):
    owner = api("owner")
    with send_mail():
        again = owner.post(MEMBERS, {"username": "member", "role": "admin"}, format="json")
        by_email = owner.post(MEMBERS, {"email": "member@example.com", "role": "admin"},
                              format="json")
    assert_error(again, 409, "already_member")
    assert_error(by_email, 409, "already_member")
    assert roles(tenant)["member"] == "member"
    assert audit(tenant) == [] and mailoutbox == [] and invitations(tenant) == []


def test_inviting_again_renews_the_pending_invitation(api, users, tenant, dave, mailoutbox,
                                                      send_mail):
    owner = api("owner")
    with send_mail():
        first = owner.post(MEMBERS, {"username": "dave", "role": "member"}, format="json")
        again = owner.post(MEMBERS, {"username": "dave", "role": "admin"}, format="json")
        unknown = [owner.post(MEMBERS, {"username": "nobody", "role": "member"},
                              format="json") for _ in range(2)]

    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.json()["role"] == "admin"
    assert unknown[1].json()["id"] == unknown[0].json()["id"]  # renewed just the same
    assert len(invitations(tenant)) == 2
    old_link, new_link = (LINK.search(mail.body).group(0) for mail in mailoutbox)
    assert old_link != new_link  # a new link; the old one stops working
    assert [e.details["renewed"] for e in audit(tenant, "member.invite")] == [
        False, True, False, True]


# --- inviting by e-mail -------------------------------------------------------------------
def test_inviting_a_new_address_creates_an_account_whose_link_sets_its_password(
        api, users, tenant, mailoutbox, client, send_mail):
    before = user_count()
    with send_mail():
        response = api("admin").post(MEMBERS, {"email": "Jane.Doe@Example.COM", "role": "member"},
                                     format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["state"], body["username"], body["email"]) == (
        "pending", "", "Jane.Doe@example.com")
    assert user_count() == before + 1
    jane = get_user_model().objects.get(username="jane.doe")
    assert not jane.has_usable_password()
    assert "jane.doe" not in roles(tenant)

    [mail] = mailoutbox
    assert mail.to == ["Jane.Doe@example.com"]
    assert "Acme" in mail.subject and "jane.doe" in mail.body
    link = LINK.search(mail.body)
    token = link.group(2)

    [event] = audit(tenant)
    assert event.action == "member.invite" and event.actor == users["admin"]
    assert event.details == {"email": "Jane.Doe@example.com", "role": "member",
                             "renewed": False}
    assert token not in json.dumps(event.details)
    assert deliveries()[0].details == {"tenant": "acme", "account": "created", "emailed": True,
                                       "username": "jane.doe"}

    # Follow the link as the invitee would: the token goes into the session, then the page
    # asks for a password; choosing it accepts the invitation.
    landing = client.get(link.group(0))
    assert landing.status_code == 302 and token not in landing["Location"]
    form = client.get(landing["Location"])
    assert form.status_code == 200 and b"new_password1" in form.content
    assert b"jane.doe" in form.content and b"Acme" in form.content
    done = client.post(landing["Location"], {"new_password1": NEW_PASSWORD,
                                             "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"].startswith("/accounts/login/")

    jane.refresh_from_db()
    assert jane.check_password(NEW_PASSWORD)
    assert roles(tenant)["jane.doe"] == "member"
    login = APIClient().post("/api/v1/auth/token/",
                             {"username": "jane.doe", "password": NEW_PASSWORD}, format="json")
    assert login.status_code == 200, login.content
    jane_client = APIClient()
    jane_client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    assert jane_client.get(MEMBERS).json()["count"] == 4

    # The link works once.
    client.logout()
    reused = client.get(link.group(0))
    assert reused.status_code == 404 and b"Link not valid" in reused.content


def test_an_existing_address_and_a_new_one_get_the_same_answer(api, users, tenant, dave,
                                                               mailoutbox, send_mail):
    before = user_count()
    with send_mail():
        existing = api("admin").post(MEMBERS, {"email": "DAVE@example.com", "role": "member"},
                                     format="json")
        new = api("admin").post(MEMBERS, {"email": "someone@example.org", "role": "member"},
                                format="json")

    assert existing.status_code == new.status_code == 202
    assert existing.json()["username"] == new.json()["username"] == ""  # never dave's name
    assert existing.json()["email"] == "DAVE@example.com"
    assert user_count() == before + 1  # only the new address got an account
    assert "dave" not in roles(tenant)
    dave_invitation = invitations(tenant)[0]
    assert dave_invitation.user == dave
    dave.refresh_from_db()
    assert dave.has_usable_password()
    assert [m.to for m in mailoutbox] == [["DAVE@example.com"], ["someone@example.org"]]
    assert "Choose your password" not in mailoutbox[0].body  # dave has one: just accept
    assert [e.details["account"] for e in deliveries()] == ["existing", "created"]

    accept(dave, existing.json()["id"])
    assert roles(tenant)["dave"] == "member"


def test_an_invited_username_is_made_unique(api, users, tenant, mailoutbox, send_mail):
    with send_mail():
        response = api("owner").post(MEMBERS, {"email": "Member@elsewhere.org", "role": "admin"},
                                     format="json")
    assert response.status_code == 202, response.content
    assert invitations(tenant)[0].user.username == "member-2"
    assert len(mailoutbox) == 1 and "member-2" in mailoutbox[0].body


def test_an_account_nobody_used_yet_gets_a_password_link_when_invited_again(
        api, users, tenant, other_tenant, mailoutbox, send_mail):
    invitee = get_user_model()(username="pat", email="pat@example.org")
    invitee.set_unusable_password()
    invitee.save()
    membership_add(tenant=other_tenant, user=invitee)
    with send_mail():
        response = api("owner").post(MEMBERS, {"email": "pat@example.org", "role": "member"},
                                     format="json")
    assert response.status_code == 202
    [mail] = mailoutbox
    assert mail.to == ["pat@example.org"] and LINK.search(mail.body)
    assert "Choose your password" in mail.body


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
    assert audit(tenant) == [] and mailoutbox == [] and invitations(tenant) == []


def test_only_an_owner_grants_or_changes_the_owner_role(api, users, tenant, dave):
    admin = api("admin")
    owner_row = membership(tenant, users["owner"])
    member_row = membership(tenant, users["member"])

    assert_error(admin.post(MEMBERS, {"username": "dave", "role": "owner"}, format="json"), 403)
    assert_error(admin.post(MEMBERS, {"username": "nobody", "role": "owner"}, format="json"),
                 403)  # the same refusal: the role is refused before anyone is looked up
    assert_error(admin.patch(member_url(member_row), {"role": "owner"}, format="json"), 403)
    assert_error(admin.patch(member_url(owner_row), {"role": "member"}, format="json"), 403)
    assert_error(admin.delete(member_url(owner_row)), 403)
    assert roles(tenant) == {"owner": "owner", "admin": "admin", "member": "member"}
    assert audit(tenant) == [] and invitations(tenant) == []

    # An admin manages the other roles.
    promoted = admin.patch(member_url(member_row), {"role": "admin"}, format="json")
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    # An owner invites an owner.
    owner = api("owner")
    granted = owner.post(MEMBERS, {"username": "dave", "role": "owner"}, format="json")
    assert granted.status_code == 202, granted.content
    accept(dave, granted.json()["id"])
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
                                                field, says, send_mail):
    before = user_count()
    with send_mail():
        response = api("owner").post(MEMBERS, payload, format="json")
    body = assert_error(response, 400, "invalid")
    assert field in body["details"], body
    assert says in " ".join(body["details"][field]).lower(), body
    assert user_count() == before
    assert roles(tenant) == {"owner": "owner", "admin": "admin", "member": "member"}
    assert audit(tenant) == [] and mailoutbox == [] and invitations(tenant) == []


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
@pytest.fixture
def removals():
    """What ``membership_removed`` told its receivers, and whether it was in a transaction."""
    from django.db import connection

    heard = []

    def receiver(sender, **kwargs):
        heard.append({**kwargs, "in_transaction": connection.in_atomic_block})

    events.membership_removed.connect(receiver, dispatch_uid="test-removals")
    yield heard
    events.membership_removed.disconnect(dispatch_uid="test-removals")


def test_admin_removes_a_member_the_account_stays_and_their_access_ends(api, users, tenant,
                                                                        removals):
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
    # The layers above hear of it, inside the transaction (so their work commits with it).
    [heard] = removals
    assert (heard["tenant"], heard["user"], heard["actor"]) == (tenant, users["member"],
                                                                 users["admin"])
    assert heard["in_transaction"]
    assert_error(api("admin").delete(member_url(member_row)), 404)
    assert len(removals) == 1


def test_a_refused_removal_tells_nobody(api, users, tenant, removals):
    owner = api("owner")
    assert_error(owner.delete(member_url(membership(tenant, users["owner"]))), 409, "last_owner")
    assert_error(api("member").delete(member_url(membership(tenant, users["admin"]))), 403)
    assert removals == []


# --- audit and idempotency ----------------------------------------------------------------
def test_every_write_is_audited_and_a_no_op_is_not(api, users, tenant, dave, mailoutbox,
                                                   send_mail):
    owner = api("owner")
    with send_mail():
        invited = owner.post(MEMBERS, {"username": "dave", "role": "member"},
                             format="json").json()
        by_email = owner.post(MEMBERS, {"email": "eve@example.org", "role": "admin"},
                              format="json").json()
    accept(dave, invited["id"])
    added = membership(tenant, dave)
    assert owner.patch(member_url(added), {"role": "admin"}, format="json").status_code == 200
    assert owner.patch(member_url(added), {"role": "admin"},
                       format="json").status_code == 200  # unchanged: not a write
    assert owner.delete(member_url(added)).status_code == 204

    events = audit(tenant)
    assert [(e.action, e.object_id) for e in events] == [
        ("member.invite", invited["id"]), ("member.invite", by_email["id"]),
        ("member.role", str(added.id)), ("member.remove", str(added.id))]
    assert all(e.actor == users["owner"] and e.source_ip == "127.0.0.1" for e in events)
    assert events[2].details == {"username": "dave", "from": "member", "to": "admin"}
    # No secrets: the e-mailed links' tokens are nowhere in either trail.
    with scopes_disabled():
        everything = json.dumps([e.details for e in AuditEvent.objects.all()])
    tokens = [LINK.search(mail.body).group(2) for mail in mailoutbox]
    assert len(tokens) == 2 and all(token not in everything for token in tokens)


def test_a_retried_invitation_is_replayed_not_repeated(api, users, tenant, mailoutbox,
                                                       send_mail):
    owner = api("owner")
    with send_mail():
        first = owner.post(MEMBERS, {"email": "zoe@example.org", "role": "member"},
                           format="json", HTTP_IDEMPOTENCY_KEY="invite-zoe")
        again = owner.post(MEMBERS, {"email": "zoe@example.org", "role": "member"},
                           format="json", HTTP_IDEMPOTENCY_KEY="invite-zoe")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert get_user_model().objects.filter(email="zoe@example.org").count() == 1
    assert len(mailoutbox) == 1 and len(audit(tenant, "member.invite")) == 1


# --- Django admin -------------------------------------------------------------------------
def test_removing_someone_in_django_admin_goes_through_the_service(client, make_user, users,
                                                                   tenant, removals):
    admin_client = client
    admin_client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    member_row = membership(tenant, users["member"])
    response = admin_client.post(f"/admin/tenants/membership/{member_row.pk}/delete/",
                                 {"post": "yes"})
    assert response.status_code == 302
    assert "member" not in roles(tenant) and len(removals) == 1
    [event] = audit(tenant, "member.remove")
    assert event.source == "admin"

    owner_row = membership(tenant, users["owner"])
    refused = admin_client.post(f"/admin/tenants/membership/{owner_row.pk}/delete/",
                                {"post": "yes"})
    assert refused.status_code == 403 and roles(tenant)["owner"] == "owner"
    assert len(removals) == 1
