"""API tokens: listed and revoked by their owner, revoked all at once by a new password; and
the login lockout per address (password spraying)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.tokens import default_token_generator
from django.core.management import call_command
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from knox.models import AuthToken
from rest_framework.test import APIClient

from tenants.models import AuditEvent
from tenants.scoping import scopes_disabled
from tenants.tokens import ApiToken
from tests.api.test_slice import assert_error
from tests.conftest import PASSWORD

TOKEN_FIELDS = {"id", "name", "created_at", "last_used_at", "expiry", "current"}
NEW_PASSWORD = "plum-orbit-canvas-42"


def log_in(username: str, password: str = PASSWORD, address: str = "127.0.0.1", **body):
    return APIClient(REMOTE_ADDR=address).post(
        "/api/v1/auth/token/", {"username": username, "password": password, **body},
        format="json")


def token_client(username: str, **body) -> tuple[APIClient, dict]:
    """A client using a new token of ``username``, and the login's answer."""
    response = log_in(username, **body)
    assert response.status_code == 200, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client, response.json()


def works(client) -> bool:
    status = client.get("/api/v1/tenants/").status_code
    assert status in (200, 401), status
    return status == 200


def revocations(**filters) -> list[AuditEvent]:
    with scopes_disabled():
        return list(AuditEvent.objects.filter(action="token.revoke", **filters)
                    .order_by("created_at"))


# --- issuing and listing ---------------------------------------------------------------------
def test_a_login_names_its_token_and_the_list_shows_only_ones_own(users):
    laptop, issued = token_client("member", name="Laptop script")
    token_client("member")
    token_client("admin", name="Someone else's")

    assert issued["name"] == "Laptop script" and issued["id"]
    body = laptop.get("/api/v1/auth/tokens/").json()

    assert body["count"] == 2 and {"next", "previous", "results"} <= set(body)
    for token in body["results"]:
        assert set(token) == TOKEN_FIELDS, token
    assert [(t["name"], t["current"]) for t in body["results"]] == [
        ("API token", False), ("Laptop script", True)]  # newest first
    mine = body["results"][1]
    assert mine["id"] == issued["id"] and mine["expiry"] is not None
    assert mine["last_used_at"] >= mine["created_at"]
    assert laptop.get(f"/api/v1/auth/tokens/{issued['id']}/").json() == mine


def test_the_list_never_shows_a_key_or_its_hash(users):
    client, issued = token_client("member")
    text = client.get("/api/v1/auth/tokens/").content.decode()
    stored = AuthToken.objects.get(user=users["member"])
    for secret in (issued["token"], stored.digest, stored.token_key):
        assert secret not in text


def test_tokens_made_elsewhere_are_listed_and_expired_ones_are_not(users):
    """A token made in Django admin's Auth tokens page (or a script) is the owner's too; one
    past its expiry no longer works, so it is not shown."""
    client, _ = token_client("member")
    AuthToken.objects.create(users["member"])
    AuthToken.objects.create(users["member"], expiry=timedelta(seconds=-1))

    names = [t["name"] for t in client.get("/api/v1/auth/tokens/").json()["results"]]

    assert names == ["API token", "API token"]


def test_a_login_is_audited_with_the_tokens_id_and_name(users):
    _, issued = token_client("member", name="CI")
    with scopes_disabled():
        [entry] = AuditEvent.objects.filter(action="token.create")
    assert (entry.tenant, entry.actor, entry.object_type, entry.object_id) == (
        None, users["member"], "tenants.apitoken", issued["id"])
    assert entry.details["name"] == "CI" and issued["token"] not in str(entry.details)


def test_a_name_is_at_most_100_characters(users):
    assert_error(log_in("member", name="x" * 101), 400, "invalid")


# --- revoking --------------------------------------------------------------------------------
def test_the_owner_revokes_a_token_and_it_stops_working_at_once(users):
    laptop, _ = token_client("member")
    script, script_token = token_client("member", name="Script")

    response = laptop.delete(f"/api/v1/auth/tokens/{script_token['id']}/")

    assert response.status_code == 204
    assert not works(script) and works(laptop)
    assert_error(laptop.get(f"/api/v1/auth/tokens/{script_token['id']}/"), 404, "not_found")
    [entry] = revocations()
    assert (entry.tenant, entry.actor, entry.object_id, entry.result, entry.source) == (
        None, users["member"], script_token["id"], "ok", "api")
    assert entry.details == {"name": "Script", "reason": "revoked"}


def test_revoking_the_token_in_use_logs_out(users):
    client, issued = token_client("member")
    assert client.delete(f"/api/v1/auth/tokens/{issued['id']}/").status_code == 204
    assert_error(client.get("/api/v1/auth/tokens/"), 401)


def test_another_users_token_is_404_and_keeps_working(users):
    member, _ = token_client("member")
    admin, admins_token = token_client("admin")
    url = f"/api/v1/auth/tokens/{admins_token['id']}/"

    assert_error(member.delete(url), 404, "not_found")
    assert_error(member.get(url), 404, "not_found")
    assert works(admin) and revocations() == []


def test_a_token_route_needs_credentials(users):
    assert_error(APIClient().get("/api/v1/auth/tokens/"), 401, "not_authenticated")


def test_a_revocation_can_be_retried_with_its_idempotency_key(users):
    client, _ = token_client("member")
    _, other = token_client("member")
    url = f"/api/v1/auth/tokens/{other['id']}/"
    first = client.delete(url, HTTP_IDEMPOTENCY_KEY="revoke-1")
    again = client.delete(url, HTTP_IDEMPOTENCY_KEY="revoke-1")
    assert first.status_code == again.status_code == 204
    assert again["Idempotent-Replayed"] == "true" and len(revocations()) == 1


def test_staff_revoke_a_token_in_django_admin(client, users, make_user):
    member, issued = token_client("member")
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)

    response = client.post(f"/admin/tenants/apitoken/{issued['id']}/delete/", {"post": "yes"})

    assert response.status_code == 302 and not works(member)
    [entry] = revocations()
    assert (entry.actor, entry.source, entry.details["reason"]) == (root, "admin", "admin")


# --- a new password revokes them all -----------------------------------------------------------
@pytest.fixture
def members_tokens(users):
    """Two working tokens of the member's, and one of the admin's."""
    clients = [token_client("member")[0], token_client("member", name="Script")[0]]
    admin = token_client("admin")[0]
    assert all(works(c) for c in [*clients, admin])
    return clients, admin


def assert_revoked_for_a_new_password(users, members_tokens):
    clients, admin = members_tokens
    assert not any(works(c) for c in clients)
    assert works(admin)
    entries = revocations()
    assert len(entries) == 2
    assert {e.details["reason"] for e in entries} == {"password_changed"}
    assert {e.details["name"] for e in entries} == {"API token", "Script"}
    assert all(e.tenant is None for e in entries)
    assert not ApiToken.objects.filter(token__user=users["member"]).exists()
    return entries


def test_the_set_password_link_revokes_every_token(client, users, members_tokens):
    """The e-mailed set-password link (reset and invitation) is Django's reset page."""
    member = users["member"]
    uid = urlsafe_base64_encode(force_bytes(member.pk))
    link = f"/accounts/reset/{uid}/{default_token_generator.make_token(member)}/"
    set_password_url = client.get(link, follow=True).redirect_chain[-1][0]

    response = client.post(set_password_url, {"new_password1": NEW_PASSWORD,
                                              "new_password2": NEW_PASSWORD})

    assert response.status_code == 302
    [entry, _] = assert_revoked_for_a_new_password(users, members_tokens)
    assert entry.actor is None and entry.source == "portal"  # nobody was signed in
    assert log_in("member", NEW_PASSWORD).status_code == 200


def test_the_portal_password_page_revokes_tokens_and_keeps_this_browser_signed_in(
        client, users, members_tokens):
    client.force_login(users["member"])
    page = client.get("/accounts/password_change/")
    assert page.status_code == 200 and "revokes every API token" in page.content.decode()

    response = client.post("/accounts/password_change/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/accounts/password_change/done/"
    [entry, _] = assert_revoked_for_a_new_password(users, members_tokens)
    assert (entry.actor, entry.source) == (users["member"], "portal")
    assert client.get("/accounts/password_change/done/").status_code == 200  # still signed in


def test_the_portal_password_page_needs_the_current_password(client, users, members_tokens):
    client.force_login(users["member"])
    response = client.post("/accounts/password_change/", {
        "old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 200
    clients, _ = members_tokens
    assert all(works(c) for c in clients) and revocations() == []


def test_django_admin_password_change_revokes_every_token(client, users, members_tokens,
                                                          make_user):
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)

    response = client.post(f"/admin/auth/user/{users['member'].pk}/password/",
                           {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert response.status_code == 302
    [entry, _] = assert_revoked_for_a_new_password(users, members_tokens)
    assert (entry.actor, entry.source) == (root, "admin")


def test_set_password_anywhere_revokes_every_token(users, members_tokens):
    member = get_user_model().objects.get(username="member")
    member.set_password(NEW_PASSWORD)
    member.save()
    [entry, _] = assert_revoked_for_a_new_password(users, members_tokens)
    assert entry.actor is None and entry.source == "system"


def test_an_unusable_password_revokes_every_token(users, members_tokens):
    member = get_user_model().objects.get(username="member")
    member.set_unusable_password()
    member.save(update_fields=["password"])
    assert_revoked_for_a_new_password(users, members_tokens)


def test_manage_py_changepassword_revokes_every_token(users, members_tokens, monkeypatch):
    from django.contrib.auth.management.commands import changepassword

    monkeypatch.setattr(changepassword.Command, "_get_pass", lambda self, prompt=None: NEW_PASSWORD)
    call_command("changepassword", "member", stdout=StringIO())
    assert_revoked_for_a_new_password(users, members_tokens)


def test_other_changes_to_the_account_keep_its_tokens(users, members_tokens):
    member = get_user_model().objects.get(username="member")
    member.email = "member@example.org"
    member.save()
    member.last_login = timezone.now()
    member.save(update_fields=["last_login"])
    clients, _ = members_tokens
    assert all(works(c) for c in clients) and revocations() == []


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 2


def test_a_hash_upgrade_at_login_is_not_a_new_password(users, members_tokens, settings):
    """Django re-hashes a password with the preferred hasher when it checks it: the same
    password, so the tokens stay."""
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    assert users["member"].password.startswith("md5$")

    assert log_in("member").status_code == 200

    users["member"].refresh_from_db()
    assert users["member"].password.startswith("pbkdf2_sha256$2$")
    clients, _ = members_tokens
    assert all(works(c) for c in clients) and revocations() == []


# --- last use --------------------------------------------------------------------------------
def last_used_at(token_id: str):
    return ApiToken.objects.get(pk=token_id).last_used_at


def test_last_use_is_noted_at_most_once_a_minute(users):
    client, issued = token_client("member")
    at_issue = last_used_at(issued["id"])

    assert works(client)
    assert last_used_at(issued["id"]) == at_issue  # used within its first minute

    long_ago = timezone.now() - timedelta(minutes=5)
    ApiToken.objects.filter(pk=issued["id"]).update(last_used_at=long_ago)
    before = timezone.now()
    assert works(client)
    noted = last_used_at(issued["id"])
    assert noted >= before

    assert works(client)
    assert last_used_at(issued["id"]) == noted  # the next use, seconds later: no write
    listed = client.get(f"/api/v1/auth/tokens/{issued['id']}/").json()
    assert listed["last_used_at"] == noted.isoformat().replace("+00:00", "Z")


def test_a_failed_authentication_is_no_use(users):
    client, issued = token_client("member")
    ApiToken.objects.filter(pk=issued["id"]).update(
        last_used_at=timezone.now() - timedelta(minutes=5))
    before = last_used_at(issued["id"])
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION=f"Token {issued['token'][:-1]}x")
    assert_error(bad.get("/api/v1/tenants/"), 401, "authentication_failed")
    assert last_used_at(issued["id"]) == before


# --- password spraying: the limit per address -------------------------------------------------
@pytest.fixture
def address_limit(settings):
    settings.VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS = 6  # per username and address: 5
    return 6


def portal_login(client, username, password, address="127.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password},
                       REMOTE_ADDR=address)


def test_spraying_from_one_address_locks_it_out_across_usernames(client, users, address_limit):
    names = ["member", "admin", "owner", "staff", "alice", "bob"]  # known or not
    statuses = [portal_login(client, name, "Summer2026!").status_code for name in names]

    assert statuses == [200] * (address_limit - 1) + [429]  # the form again, then locked out
    locked = portal_login(client, "outsider", PASSWORD)  # a right password, a fresh username
    assert locked.status_code == 429 and locked["Retry-After"] == "900"
    assert "Too many failed logins from your address" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert_error(log_in("outsider"), 429, "login_locked_out")
    # Another address is not locked out.
    assert portal_login(client, "outsider", PASSWORD, address="192.0.2.7").status_code == 302
    assert log_in("outsider", address="192.0.2.7").status_code == 200


def test_the_token_endpoint_counts_the_same_failures(users, address_limit):
    for name in ["member", "admin", "owner", "staff", "alice"]:
        assert_error(log_in(name, "wrong"), 400, "invalid_credentials")
    error = assert_error(log_in("bob", "wrong"), 429, "login_locked_out")
    assert error["details"] == {"retry_after": 900}
    assert "from your address" in error["message"] and "account" not in error["message"]


def test_a_successful_login_does_not_clear_the_other_usernames_failures(client, users,
                                                                        address_limit):
    for name in ["alice", "bob", "carol", "dave"]:
        assert portal_login(client, name, "wrong").status_code == 200
    assert portal_login(client, "member", PASSWORD).status_code == 302  # the sprayer's own
    client.logout()
    assert portal_login(client, "erin", "wrong").status_code == 200
    assert portal_login(client, "frank", "wrong").status_code == 429


def test_the_address_limit_lifts_after_the_cool_off(client, users, address_limit, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=60)
    for name in ["a", "b", "c", "d", "e", "f"]:
        portal_login(client, name, "wrong")
    assert portal_login(client, "member", PASSWORD).status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(seconds=61))
    assert portal_login(client, "member", PASSWORD).status_code == 302


def test_the_address_limit_can_be_turned_off(client, users, settings):
    settings.VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS = 0
    for number in range(12):
        assert portal_login(client, f"user{number}", "wrong").status_code == 200
    assert portal_login(client, "member", PASSWORD).status_code == 302


def test_the_default_limits(settings):
    assert (settings.AXES_FAILURE_LIMIT, settings.VDI_LOGIN_FAILURE_LIMIT_PER_ADDRESS) == (5, 30)
