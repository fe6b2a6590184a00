"""Error pages in the portal's look for people, the API's error envelope under /api/."""

import json

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from tests.conftest import PASSWORD
from config import errorpages


def test_404_has_the_portals_look_and_navigation(client, users):
    client.login(username="member", password=PASSWORD)
    response = client.get("/no/such/page/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "This page doesn't exist" in html and 'class="topbar"' in html
    assert 'href="#main"' in html and "/static/css/portal.css" in html


def test_another_tenants_page_is_the_same_404(client, users, other_tenant):
    client.login(username="member", password=PASSWORD)
    for url in ("/t/globex/", "/t/no-such-tenant/"):
        response = client.get(url)
        assert response.status_code == 404
        assert "This page doesn't exist" in response.content.decode()


def test_403_explains_and_links_back(client, users):
    client.login(username="member", password=PASSWORD)
    response = client.get("/t/acme/members/")
    html = response.content.decode()
    assert response.status_code == 403
    assert "You can't open this page" in html
    assert "Only the organisation&#x27;s owners and admins may open this page." in html
    assert 'href="/t/acme/"' in html


def test_500_renders_without_the_request_context_or_the_database(db):
    request = RequestFactory().get("/t/acme/")
    with CaptureQueriesContext(connection) as queries:
        response = errorpages.server_error(request)
    html = response.content.decode()
    assert response.status_code == 500 and len(queries) == 0
    assert "Something went wrong on our side" in html and "/static/css/portal.css" in html


def test_500_shows_the_request_id_for_support():
    from core import context

    with context.bind(request_id="req-1234"):
        response = errorpages.server_error(RequestFactory().get("/"))
    assert "req-1234" in response.content.decode()


@pytest.mark.parametrize("handler,status,code", [
    (lambda r: errorpages.page_not_found(r, Exception()), 404, "not_found"),
    (lambda r: errorpages.permission_denied(r, Exception()), 403, "permission_denied"),
    (errorpages.server_error, 500, "server_error"),
])
def test_api_paths_get_the_error_envelope(db, handler, status, code):
    response = handler(RequestFactory().get("/api/v1/nothing/"))
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["error"]["code"] == code


def test_an_unknown_api_url_is_json(client, db):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_error_pages_are_wired_in_the_urlconf():
    from config import urls

    assert urls.handler403 == "config.errorpages.permission_denied"
    assert urls.handler404 == "config.errorpages.page_not_found"
    assert urls.handler500 == "config.errorpages.server_error"


def test_a_refused_csrf_token_gets_the_portals_look(users):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["admin"])
    response = client.post("/t/acme/members/", {"who": "x", "role": "member"})
    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
