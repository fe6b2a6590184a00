"""Invitations after they are sent: the invited person accepts or declines (API, portal, the
e-mailed link), the organisation lists and revokes them, and they expire. Nobody but the
person invited can use one, and the inviter never learns more than they typed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import AuditEvent, Invitation, Membership
from tenants.scoping import scopes_disabled
from tenants.members import invitation_accept, membership_invite
from tenants.services import membership_add
from tests.api.test_slice import assert_error
from tests.conftest import PASSWORD
from core.errors import Forbidden

MEMBERS = "/api/v1/tenants/acme/members/"
INVITATIONS = "/api/v1/tenants/acme/invitations/"
MINE = "/api/v1/invitations/"
LINK = re.compile(r"https?://testserver(/invitations/[0-9a-f-]{36}/[A-Za-z0-9_-]+/)")
SITE = "http://testserver/"


def client_of(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def invite(tenant, actor, **whom) -> Invitation:
    return membership_invite(tenant=tenant, actor=actor, role=whom.pop("role", "member"),
                             site_url=SITE, **whom)


def reload(invitation) -> Invitation:
    with scopes_disabled():
        return Invitation.objects.get(pk=invitation.pk)


def role_of(tenant, user) -> str | None:
    with scopes_disabled():
        return (Membership.objects.filter(tenant=tenant, user=user)
                .values_list("role", flat=True).first())


def trail(tenant, action) -> list[AuditEvent]:
    with scopes_disabled():
        return list(AuditEvent.objects.filter(tenant=tenant, action=action)
                    .order_by("created_at"))


@pytest.fixture
def dave(make_user):
    return make_user("dave")


@pytest.fixture
def invited(tenant, users, dave):
    """dave, invited by acme's admin as an admin."""
    return invite(tenant, users["admin"], username="dave", role="admin")


@pytest.fixture
def emailed(tenant, users, dave, mailoutbox, django_capture_on_commit_callbacks):
    """dave invited by username: the path of the link e-mailed to him."""
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite(tenant, users["admin"], username="dave")
    return invitation, LINK.search(mailoutbox[-1].body).group(1)


# --- the person invited, through the API ----------------------------------------------------
def test_the_invited_person_lists_reads_and_accepts_their_invitation(tenant, users, dave,
                                                                     invited, make_user):
    mine = client_of(dave)
    listed = mine.get(MINE).json()
    assert listed["count"] == 1
    [item] = listed["results"]
    assert item["id"] == str(invited.id) and item["tenant"] == {"slug": "acme", "name": "Acme"}
    assert (item["state"], item["role"], item["invited_by"]) == ("pending", "admin", "admin")
    assert mine.get(MINE, {"tenant": "globex"}).json()["count"] == 0
    assert mine.get(f"{MINE}{invited.id}/").status_code == 200

    response = mine.post(f"{MINE}{invited.id}/accept/")

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "accepted" and response.json()["accepted_at"]
    assert role_of(tenant, dave) == "admin"
    assert mine.get(MINE, {"state": "pending"}).json()["count"] == 0
    [entry] = trail(tenant, "invitation.accept")
    assert (entry.result, entry.actor, entry.object_id) == ("ok", dave, str(invited.id))
    assert entry.details["username"] == "dave" and entry.details["role"] == "admin"
    assert_error(mine.post(f"{MINE}{invited.id}/accept/"), 409, "invitation_closed")
    assert_error(mine.post(f"{MINE}{invited.id}/decline/"), 409, "invitation_closed")


def test_declining_closes_the_invitation(tenant, users, dave, invited):
    mine = client_of(dave)
    response = mine.post(f"{MINE}{invited.id}/decline/")
    assert response.status_code == 200 and response.json()["state"] == "declined"
    assert role_of(tenant, dave) is None
    assert_error(mine.post(f"{MINE}{invited.id}/accept/"), 409, "invitation_closed")
    [entry] = trail(tenant, "invitation.decline")
    assert (entry.result, entry.actor) == ("ok", dave)
    listed = client_of(users["admin"]).get(INVITATIONS).json()["results"]
    assert [i["state"] for i in listed] == ["declined"]


def test_nobody_else_sees_or_answers_an_invitation(tenant, users, dave, invited, api):
    """Not another user, not the inviter, not staff: 404, whether or not it reached anyone."""
    nobody = invite(tenant, users["admin"], username="nobody")
    for intruder in (users["member"], users["admin"], users["staff"], users["outsider"]):
        client = client_of(intruder)
        assert client.get(MINE).json()["count"] == 0
        for invitation in (invited, nobody):
            assert_error(client.get(f"{MINE}{invitation.id}/"), 404, "not_found")
            assert_error(client.post(f"{MINE}{invitation.id}/accept/"), 404, "not_found")
            assert_error(client.post(f"{MINE}{invitation.id}/decline/"), 404, "not_found")
    assert reload(invited).state == reload(nobody).state == "pending"
    assert role_of(tenant, dave) is None
    assert_error(api().get(MINE), 401)


def test_an_expired_invitation_can_no_longer_be_accepted(tenant, users, dave, invited):
    with scopes_disabled():
        Invitation.objects.filter(pk=invited.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1))
    mine = client_of(dave)
    assert mine.get(f"{MINE}{invited.id}/").json()["state"] == "expired"
    assert mine.get(MINE, {"state": "pending"}).json()["count"] == 0
    assert mine.get(MINE, {"state": "expired"}).json()["count"] == 1
    assert_error(mine.post(f"{MINE}{invited.id}/accept/"), 409, "invitation_expired")
    assert role_of(tenant, dave) is None
    # Inviting again renews it.
    renewed = invite(tenant, users["admin"], username="dave")
    assert renewed.pk == invited.pk and renewed.is_open
    assert mine.post(f"{MINE}{invited.id}/accept/").status_code == 200


def test_someone_who_became_a_member_meanwhile_gets_a_conflict(tenant, users, dave, invited):
    membership_add(tenant=tenant, user=dave)
    assert_error(client_of(dave).post(f"{MINE}{invited.id}/accept/"), 409, "already_member")
    assert reload(invited).state == "pending" and role_of(tenant, dave) == "member"


def test_an_address_several_accounts_share_is_for_each_of_them(tenant, users, make_user,
                                                               mailoutbox,
                                                               django_capture_on_commit_callbacks):
    first, second = make_user("twin1"), make_user("twin2")
    get_user_model().objects.filter(pk__in=[first.pk, second.pk]).update(
        email="twins@example.org")
    first.refresh_from_db()
    second.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite(tenant, users["owner"], email="Twins@example.org")
    assert invitation.user is None and [m.to for m in mailoutbox] == [["Twins@example.org"]]
    assert client_of(first).get(MINE).json()["count"] == 1
    assert client_of(second).get(MINE).json()["count"] == 1

    assert client_of(second).post(f"{MINE}{invitation.id}/accept/").status_code == 200

    assert role_of(tenant, second) == "member" and role_of(tenant, first) is None
    assert client_of(first).get(MINE).json()["count"] == 0
    assert reload(invitation).user == second


# --- the organisation's side: list and revoke -----------------------------------------------
def test_admins_list_invitations_as_they_gave_them(tenant, users, dave, invited, api):
    nobody = invite(tenant, users["owner"], username="nobody")
    by_email = invite(tenant, users["owner"], email="DAVE@example.com")  # dave's: renewed
    assert by_email.pk == invited.pk

    listed = api("admin").get(INVITATIONS).json()
    assert listed["count"] == 2
    rows = {row["id"]: row for row in listed["results"]}
    # Whom they asked for, as last given; never which account it is, nor its address.
    assert (rows[str(invited.id)]["username"], rows[str(invited.id)]["email"]) == (
        "", "DAVE@example.com")
    assert (rows[str(nobody.id)]["username"], rows[str(nobody.id)]["email"]) == ("nobody", "")
    assert set(rows[str(nobody.id)]) == set(rows[str(invited.id)])
    assert "user" not in rows[str(nobody.id)]
    assert api("admin").get(INVITATIONS, {"state": "pending"}).json()["count"] == 2
    assert api("admin").get(INVITATIONS, {"state": "accepted"}).json()["count"] == 0
    assert_error(api("admin").get(INVITATIONS, {"state": "lost"}), 400, "invalid")
    assert_error(api("member").get(INVITATIONS), 403)
    assert_error(api("member").get(f"{INVITATIONS}{nobody.id}/"), 403)
    assert_error(api("outsider").get(INVITATIONS), 404)
    assert_error(api("outsider").get(f"/api/v1/tenants/globex/invitations/{nobody.id}/"), 404)


def test_revoking_a_pending_invitation(tenant, users, dave, emailed, api, client):
    invitation, link = emailed
    assert_error(api("member").delete(f"{INVITATIONS}{invitation.id}/"), 403)
    assert reload(invitation).state == "pending"

    response = api("admin").delete(f"{INVITATIONS}{invitation.id}/")

    assert response.status_code == 204, response.content
    assert reload(invitation).state == "revoked"
    assert api("admin").get(f"{INVITATIONS}{invitation.id}/").json()["state"] == "revoked"
    assert_error(client_of(dave).post(f"{MINE}{invitation.id}/accept/"), 409, "invitation_closed")
    assert client.get(link).status_code == 404  # the link is dead
    assert_error(api("admin").delete(f"{INVITATIONS}{invitation.id}/"), 409, "invitation_closed")
    done, refused = trail(tenant, "invitation.revoke")
    assert (done.result, done.actor, done.details) == (
        "ok", users["admin"], {"username": "dave", "role": "member"})
    assert (refused.result, refused.details["error"]["code"]) == ("rejected",
                                                                  "invitation_closed")


def test_only_an_owner_revokes_an_invitation_to_the_owner_role(tenant, users, dave, api):
    invitation = invite(tenant, users["owner"], username="dave", role="owner")
    assert_error(api("admin").delete(f"{INVITATIONS}{invitation.id}/"), 403)
    assert reload(invitation).state == "pending"
    assert api("owner").delete(f"{INVITATIONS}{invitation.id}/").status_code == 204


# --- the e-mailed link and the portal --------------------------------------------------------
def test_the_link_asks_an_existing_account_to_log_in_then_to_accept(tenant, users, dave,
                                                                    emailed, client):
    invitation, link = emailed
    landing = client.get(link)
    page = f"/invitations/{invitation.id}/"
    assert landing.status_code == 302 and landing["Location"] == page
    to_login = client.get(page)
    assert to_login.status_code == 302 and to_login["Location"].startswith("/accounts/login/")

    assert client.login(username="dave", password=PASSWORD)
    form = client.get(page).content.decode()
    assert "Join Acme" in form and 'value="accept"' in form and "new_password1" not in form

    response = client.post(page, {"answer": "accept"})

    assert response.status_code == 302 and response["Location"] == "/t/acme/"
    assert role_of(tenant, dave) == "member"
    client.logout()
    assert client.get(link).status_code == 404  # once


def test_the_link_opened_by_another_account_says_so_without_naming_it(tenant, users, dave,
                                                                      emailed, client):
    invitation, link = emailed
    client.force_login(users["member"])
    client.get(link)
    response = client.get(f"/invitations/{invitation.id}/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "for another account" in html and "dave" not in html
    assert client.post(f"/invitations/{invitation.id}/", {"answer": "accept"}).status_code == 403
    assert role_of(tenant, users["member"]) == "member" and reload(invitation).state == "pending"


def test_a_wrong_or_replaced_token_is_not_a_link(tenant, users, dave, emailed, client,
                                                 mailoutbox, django_capture_on_commit_callbacks):
    invitation, link = emailed
    assert client.get(link[:-5] + "xxxx/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        invite(tenant, users["admin"], username="dave")  # renewed: a new link
    assert client.get(link).status_code == 404
    new_link = LINK.search(mailoutbox[-1].body).group(1)
    assert client.get(new_link).status_code == 302


def test_no_page_for_an_invitation_that_is_not_yours(tenant, users, dave, invited, client):
    client.force_login(users["admin"])  # the inviter
    assert client.get(f"/invitations/{invited.id}/").status_code == 404
    assert client.post(f"/invitations/{invited.id}/", {"answer": "accept"}).status_code == 404
    assert reload(invited).state == "pending"


def test_the_link_never_sets_the_password_of_an_account_already_in_use(
        tenant, users, make_user, mailoutbox, client, django_capture_on_commit_callbacks):
    """An account without a password that has signed in (single sign-on) is asked to sign
    in like any other: the link is not a way to give it a password."""
    sso = make_user("sso")
    sso.set_unusable_password()
    sso.last_login = timezone.now()
    sso.save()
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite(tenant, users["admin"], username="sso")
    assert "Choose your password" not in mailoutbox[-1].body
    client.get(LINK.search(mailoutbox[-1].body).group(1))
    response = client.get(f"/invitations/{invitation.id}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    with pytest.raises(Forbidden):
        invitation_accept(invitation=invitation, user=sso, token="whatever",
                          password="a new password 123")
    sso.refresh_from_db()
    assert not sso.has_usable_password() and role_of(tenant, sso) is None


def test_a_set_password_link_refuses_a_weak_password_and_changes_nothing(
        tenant, users, mailoutbox, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite(tenant, users["admin"], email="new@example.org")
    client.get(LINK.search(mailoutbox[-1].body).group(1))
    page = f"/invitations/{invitation.id}/"
    response = client.post(page, {"new_password1": "short1", "new_password2": "short1"})
    assert response.status_code == 200 and "too short" in response.content.decode()
    assert reload(invitation).state == "pending"
    assert not reload(invitation).user.has_usable_password()


def test_the_invitations_page_lists_open_ones_to_accept_or_decline(tenant, other_tenant, users,
                                                                   dave, invited, client):
    declined = invite(other_tenant, users["outsider"], username="dave")
    client.force_login(dave)
    html = client.get("/invitations/").content.decode()
    assert "Acme" in html and "Globex" in html and html.count('value="accept"') == 2

    assert client.post(f"/invitations/{declined.id}/", {"answer": "decline"}).status_code == 302
    assert client.post(f"/invitations/{invited.id}/", {"answer": "accept"})["Location"] \
        == "/t/acme/"
    assert role_of(tenant, dave) == "admin" and role_of(other_tenant, dave) is None
    assert "No invitations are waiting for you." in client.get("/invitations/").content.decode()
    assert client.post(f"/invitations/{invited.id}/", {"answer": "accept"}).status_code == 200
    assert client.get("/invitations/").status_code == 200
    client.logout()
    assert client.get("/invitations/")["Location"].startswith("/accounts/login/")


def test_the_members_page_shows_pending_invitations_and_revokes_them(tenant, other_tenant,
                                                                     users, dave, invited,
                                                                     logged_in):
    theirs = invite(other_tenant, users["outsider"], username="dave")
    client = logged_in("admin")
    html = client.get("/t/acme/members/").content.decode()
    assert "1 pending invitation" in html and f'data-invitation="{invited.id}"' in html
    assert "dave@example.com" not in html  # the account's address is not the inviter's to see

    response = client.post(f"/t/acme/members/invitations/{invited.id}/revoke/", follow=True)

    assert "The invitation of dave is revoked." in response.content.decode()
    assert reload(invited).state == "revoked"
    assert client.post(f"/t/acme/members/invitations/{theirs.id}/revoke/").status_code == 404
    assert reload(theirs).state == "pending"
    again = invite(tenant, users["admin"], username="dave")
    assert logged_in("member").post(
        f"/t/acme/members/invitations/{again.id}/revoke/").status_code == 403
    assert reload(again).state == "pending"


@pytest.fixture
def operator(client, make_user):
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    return client


def test_staff_see_whom_an_invitation_reached_and_revoke_it_in_django_admin(operator, tenant,
                                                                            users, dave,
                                                                            invited):
    admin_client = operator
    nobody = invite(tenant, users["admin"], username="nobody")
    html = admin_client.get(f"/admin/tenants/invitation/{invited.pk}/change/").content.decode()
    assert f"/admin/auth/user/{dave.pk}/change/" in html  # the account, for staff only
    assert "token_hash" not in html and invited.token_hash not in html
    response = admin_client.post("/admin/tenants/invitation/", {
        "action": "revoke", "_selected_action": [str(nobody.pk)]})
    assert response.status_code == 302
    assert reload(nobody).state == "revoked" and reload(invited).state == "pending"
    [entry] = trail(tenant, "invitation.revoke")
    assert entry.source == "admin"
