"""Login lockout, password rules, Content-Security-Policy and the other browser headers."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.api.test_slice import assert_error
from tests.conftest import PASSWORD

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


# --- login lockout --------------------------------------------------------------------------
def portal_login(client, username, password):
    return client.post("/accounts/login/", {"username": username, "password": password})


def token_login(client, username, password):
    return client.post("/api/v1/auth/token/", {"username": username, "password": password},
                       content_type="application/json")


def test_the_portal_login_locks_a_username_out_at_one_address_then_lets_it_back(
        client, users, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    statuses = [portal_login(client, "member", "wrong").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]  # the form again, then locked out

    locked = portal_login(client, "member", PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert locked["Retry-After"] == "2"
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # Another account from the same address, or this one from elsewhere, is not locked.
    assert portal_login(client, "admin", PASSWORD).status_code == 302
    client.logout()
    other = client.post("/accounts/login/", {"username": "member", "password": PASSWORD},
                        REMOTE_ADDR="192.0.2.7")
    assert other.status_code == 302
    client.logout()

    time.sleep(2.1)  # the cool-off
    assert portal_login(client, "member", PASSWORD).status_code == 302


def test_the_token_endpoint_locks_out_with_a_json_error(client, users, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    for _ in range(4):
        assert_error(token_login(client, "member", "wrong"), 400, "invalid_credentials")
    error = assert_error(token_login(client, "member", "wrong"), 429, "login_locked_out")
    assert error["details"] == {"retry_after": 2}

    locked = token_login(client, "member", PASSWORD)
    assert_error(locked, 429, "login_locked_out")
    assert locked["Retry-After"] == "2"
    assert token_login(client, "owner", PASSWORD).status_code == 200

    time.sleep(2.1)
    assert token_login(client, "member", PASSWORD).status_code == 200


def test_a_successful_login_clears_the_failures(client, users):
    for _ in range(4):
        portal_login(client, "member", "wrong")
    assert portal_login(client, "member", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        assert portal_login(client, "member", "wrong").status_code == 200


# --- password rules -------------------------------------------------------------------------
@pytest.fixture
def invite_link(api, users, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the e-mail goes after commit
        response = api("owner").post("/api/v1/tenants/acme/members/",
                                     {"email": "newcomer@example.com", "role": "member"},
                                     format="json")
    assert response.status_code == 202, response.content
    return re.search(r"https?://\S+/invitations/\S+/", mailoutbox[-1].body).group(0)


@pytest.mark.parametrize("weak, complaint", [
    ("short1", "too short"),
    ("password123", "too common"),
    ("8462957301", "entirely numeric"),
    ("newcomer-example", "too similar"),
])
def test_the_invitation_page_refuses_weak_passwords(client, invite_link, weak, complaint):
    form = client.get(invite_link, follow=True)
    assert form.status_code == 200
    set_password_url = form.redirect_chain[-1][0]

    response = client.post(set_password_url, {"new_password1": weak, "new_password2": weak})

    assert response.status_code == 200 and complaint in response.content.decode()
    assert not client.login(username="newcomer", password=weak)


def test_the_invitation_page_takes_a_strong_password(client, invite_link):
    set_password_url = client.get(invite_link, follow=True).redirect_chain[-1][0]
    strong = "plum-orbit-canvas-42"
    response = client.post(set_password_url, {"new_password1": strong, "new_password2": strong})
    assert response.status_code == 302
    assert portal_login(client, "newcomer", strong).status_code == 302


def test_admin_password_changes_are_validated_too(client, users, make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    url = f"/admin/auth/user/{users['member'].pk}/password/"
    response = client.post(url, {"password1": "12345678", "password2": "12345678"})
    assert response.status_code == 200 and "entirely numeric" in response.content.decode()
    users["member"].refresh_from_db()
    assert users["member"].check_password(PASSWORD)


# --- headers --------------------------------------------------------------------------------
def policy(response) -> dict[str, list[str]]:
    return {name: values for name, *values in
            (part.split() for part in response["Content-Security-Policy"].split(";")
             if part.strip())}


def test_portal_pages_carry_a_strict_content_security_policy(client, users):
    client.force_login(users["member"])
    for url in ("/accounts/login/", "/t/acme/"):
        response = client.get(url)
        assert response.status_code == 200, url
        csp = policy(response)
        assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"]
        assert csp["style-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["object-src"] == ["'none'"]
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"


def test_the_console_page_may_dial_the_console_proxy(client, users, member_desktop, api,
                                                     run_tasks, settings):
    from tenants.scoping import scopes_disabled
    from tests.api.test_slice import connect
    from vdi.models import Pool

    with scopes_disabled():
        pool = Pool.objects.get(pk=member_desktop.pool_id)
    session = connect(api("member"), pool, run_tasks).json()["session"]
    client.force_login(users["member"])
    with run_tasks():
        response = client.get(f"/t/acme/sessions/{session}/console/")
    assert response.status_code == 200
    assert policy(response)["connect-src"] == ["'self'", "ws://testserver:6080"]

    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_URL": "wss://console.example.com/ws"}
    with run_tasks():
        response = client.get(f"/t/acme/sessions/{session}/console/")
    assert policy(response)["connect-src"] == ["'self'", "wss://console.example.com"]
    assert "connect-src" not in response.content.decode()


def test_admin_and_api_docs_work_under_the_policy(client, users, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    admin = client.get("/admin/auth/user/")
    assert admin.status_code == 200
    assert policy(admin)["script-src"] == ["'self'"]
    assert policy(admin)["style-src"] == ["'self'", "'unsafe-inline'"]  # its inline <style>

    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and policy(docs)["script-src"] == ["'self'"]
    page = docs.content.decode()
    assert not re.search(r"<script>", page)  # every script is a file
    init = re.search(r'<script src="([^"]*script=[^"]*)"', page).group(1).replace("&amp;", "&")
    script = client.get(init)
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>"  # a script without src (json_script blocks are made at
    r"|<style\b"                     # render time, never written in a template)
    r"|\sstyle=[\"']"
    r"|\son[a-z]+=[\"']"
    r"|javascript:",
    re.IGNORECASE,
)


def test_templates_have_no_inline_script_style_or_event_handler():
    offenders = [f"{path.relative_to(TEMPLATES)}: {match.group(0)}"
                 for path in TEMPLATES.rglob("*.html")
                 for match in INLINE.finditer(path.read_text())]
    assert offenders == []
