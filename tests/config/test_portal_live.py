"""The portal's live parts: the fragments htmx polls carry the stable hooks browser tests and
the page's script rely on (data-desktop, data-pool, data-field, data-action), poll fast while
something changes and slowly once all has settled, and stay inside the tenant."""

import re

import pytest
from django.test import Client

from brokers.models import Session
from tenants.scoping import scopes_disabled
from vdi.models import Desktop


def element(html: str, marker: str) -> str:
    """The text from ``marker`` to the end of the element that carries it (good enough for
    the flat fragments here: up to the next closing tag of the same name)."""
    start = html.index(marker)
    tag = html.rindex("<", 0, start)
    name = re.match(r"<(\w+)", html[tag:])[1]
    return html[tag:html.index(f"</{name}>", start)]


def test_the_dashboard_marks_each_desktop_with_its_state_and_power_buttons(
        logged_in, member_desktop):
    html = logged_in("member").get("/t/acme/").content.decode()

    desktop = element(html, f'data-desktop="{member_desktop.pk}"')
    assert re.search(r'data-field="state"[^>]*>Running<', desktop)
    for kind in ("shutdown", "poweroff", "reboot", "reset"):
        assert f'data-action="{kind}"' in desktop, kind
    assert 'data-action="start"' not in desktop  # only what the state allows
    assert 'hx-get="/t/acme/live/"' in html and 'hx-trigger="every ' in html


def test_the_live_fragment_follows_the_desktops_state(logged_in, member_desktop, run_tasks):
    client = logged_in("member")
    with run_tasks():
        client.post(f"/t/acme/desktops/{member_desktop.pk}/poweroff/")

    response = client.get("/t/acme/live/", HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html  # a fragment, not a page
    assert 'id="dashboard-live"' in html
    desktop = element(html, f'data-desktop="{member_desktop.pk}"')
    assert re.search(r'data-field="state"[^>]*>Stopped<', desktop)
    assert 'data-action="start"' in desktop and 'data-action="poweroff"' not in desktop


def test_each_pool_card_has_its_connect_button(logged_in, make_pool):
    pool = make_pool(name="Office")
    disabled = make_pool(name="Closed", enabled=False)
    html = logged_in("member").get("/t/acme/live/").content.decode()

    card = element(html, f'data-pool-card="{pool.pk}"')
    assert 'data-action="connect"' in card and 'type="submit"' in card
    assert f'action="/t/acme/pools/{pool.pk}/connect/"' in card
    assert 'data-action="connect"' not in element(html, f'data-pool-card="{disabled.pk}"')


def test_polling_is_fast_while_something_changes_and_slow_once_settled(
        logged_in, member_desktop, settings):
    settings.VDI = {**settings.VDI, "PORTAL_POLL_S": 0.5}
    client = logged_in("member")
    assert 'hx-trigger="every 2500ms, poll-now"' in client.get("/t/acme/live/").content.decode()

    with scopes_disabled():
        Desktop.objects.filter(pk=member_desktop.pk).update(state="stopping")
    assert 'hx-trigger="every 500ms, poll-now"' in client.get("/t/acme/live/").content.decode()


def test_the_pool_list_counts_ready_spares_and_desktops_live(logged_in, make_pool, host,
                                                             run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=2, max_desktops=4)
    client = logged_in("admin")

    html = client.get("/t/acme/pools/live/").content.decode()

    row = element(html, f'data-pool="{pool.pk}"')
    assert '<span data-field="ready">2</span>' in row
    assert '<span data-field="desktops">2</span>' in row
    assert 'hx-get="/t/acme/pools/live/"' in html and "<html" not in html


def test_members_get_403_and_outsiders_404_on_the_pool_fragment(logged_in, make_pool):
    make_pool()
    assert logged_in("member").get("/t/acme/pools/live/").status_code == 403
    assert logged_in("outsider").get("/t/acme/pools/live/").status_code == 404
    assert logged_in("outsider").get("/t/acme/live/").status_code == 404


def test_the_dashboard_fragment_never_shows_another_tenants_pools(logged_in, make_pool):
    make_pool(name="Acme office")
    html = logged_in("outsider").get("/t/globex/live/").content.decode()
    assert "Acme office" not in html and "No desktop pools are available" in html


def test_pending_session_status_fragment_then_refresh_once_ready(logged_in, make_pool, host,
                                                                 run_tasks):
    pool = make_pool(min_ready=0)
    client = logged_in("member")
    client.post(f"/t/acme/pools/{pool.pk}/connect/")
    with scopes_disabled():
        session = Session.objects.get()
    url = f"/t/acme/sessions/{session.pk}/status/"

    pending = client.get(url)
    html = pending.content.decode()
    assert 'data-field="connect-state">Pending<' in html and "<progress" in html
    assert "HX-Refresh" not in pending.headers and f'hx-get="{url}"' in html

    with scopes_disabled():
        Session.objects.filter(pk=session.pk).update(state="ready")
    ready = client.get(url)
    assert ready.headers["HX-Refresh"] == "true"
    assert 'data-field="connect-state">Ready<' in ready.content.decode()
    assert "hx-get" not in ready.content.decode()  # nothing left to follow


@pytest.fixture
def connected(logged_in, make_pool, host, run_tasks):
    """The member's portal client, after Connect on a pool with a ready spare, and the session."""
    with run_tasks():
        pool = make_pool(min_ready=1)
    client = logged_in("member")
    with run_tasks():
        client.post(f"/t/acme/pools/{pool.pk}/connect/")
    with scopes_disabled():
        return client, Session.objects.get()


def test_the_ready_session_page_links_to_the_console_and_the_vv(connected):
    client, session = connected
    html = client.get(f"/t/acme/sessions/{session.pk}/").content.decode()

    assert 'data-field="connect-state"' in html
    assert re.search(rf'data-action="open-console"[^>]*href="/t/acme/sessions/{session.pk}/'
                     r'console/"', html)
    assert re.search(rf'data-action="download-vv"[^>]*href="/t/acme/sessions/{session.pk}/'
                     r'console.vv"', html)


def test_another_members_session_status_is_404(logged_in, make_pool, host):
    pool = make_pool()
    logged_in("member").post(f"/t/acme/pools/{pool.pk}/connect/")
    with scopes_disabled():
        session = Session.objects.get()
    assert logged_in("admin").get(f"/t/acme/sessions/{session.pk}/status/").status_code == 404
    assert logged_in("outsider").get(f"/t/acme/sessions/{session.pk}/status/").status_code == 404


def test_pages_load_htmx_from_our_static_files_with_the_csrf_header(logged_in, member_desktop):
    html = logged_in("member").get("/t/acme/").content.decode()
    assert '<script src="/static/htmx/htmx.min.js" defer></script>' in html
    assert '<script src="/static/js/portal.js" defer></script>' in html
    assert '"allowEval":false' in html and '"includeIndicatorStyles":false' in html
    assert re.search(r'<body hx-headers=\'\{"X-CSRFToken": "[A-Za-z0-9]+"\}\'>', html)
    assert "style=" not in html and "onclick" not in html and "hx-on" not in html
    assert "<script>" not in html  # nothing inline


def test_htmx_is_served(client, db):
    from django.contrib.staticfiles import finders

    assert finders.find("htmx/htmx.min.js")
    assert finders.find("js/portal.js")


def test_a_toggle_disables_and_enables_a_pool(logged_in, make_pool):
    pool = make_pool()
    client = logged_in("admin")
    html = client.get("/t/acme/pools/").content.decode()
    assert 'data-action="disable"' in element(html, f'data-pool="{pool.pk}"')

    response = client.post(f"/t/acme/pools/{pool.pk}/toggle/", follow=True)
    assert "disabled: it keeps its desktops" in response.content.decode()
    pool.refresh_from_db()
    assert not pool.enabled
    client.post(f"/t/acme/pools/{pool.pk}/toggle/")
    pool.refresh_from_db()
    assert pool.enabled


def test_the_toggle_needs_an_admin_and_the_csrf_token(logged_in, make_pool, users):
    pool = make_pool()
    assert logged_in("member").post(f"/t/acme/pools/{pool.pk}/toggle/").status_code == 403
    assert logged_in("outsider").post(f"/t/acme/pools/{pool.pk}/toggle/").status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(users["admin"])
    assert strict.post(f"/t/acme/pools/{pool.pk}/toggle/").status_code == 403
    pool.refresh_from_db()
    assert pool.enabled


def test_a_power_button_sent_by_htmx_gets_the_fresh_live_part_and_the_message(
        logged_in, member_desktop, settings):
    settings.VDI = {**settings.VDI, "PORTAL_POLL_S": 2}
    client = logged_in("member")
    html = client.get("/t/acme/").content.decode()
    url = f"/t/acme/desktops/{member_desktop.pk}/poweroff/"
    assert f'hx-post="{url}" hx-target="#dashboard-live"' in html

    response = client.post(url, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    desktop = element(html, f'data-desktop="{member_desktop.pk}"')
    assert re.search(r'data-field="operation">Power off: pending', desktop)
    assert 'hx-trigger="every 2000ms, poll-now"' in html  # something is changing: fast
    assert '<div id="messages" hx-swap-oob="innerHTML">' in html
    assert f"Power off: {member_desktop.name} — on its way." in html


def test_ending_a_session_by_htmx_answers_with_the_live_part(connected, run_tasks):
    client, session = connected
    with run_tasks():
        response = client.post(f"/t/acme/sessions/{session.pk}/end/", HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200 and "Session ended." in html
    assert f'data-session="{session.pk}"' not in html and "No live sessions" in html


def test_the_sessions_page_lists_the_users_own_sessions_with_end(logged_in, make_pool, host,
                                                                 run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=2)
    with run_tasks():
        logged_in("admin").post(f"/t/acme/pools/{pool.pk}/connect/")
    client = logged_in("member")
    with run_tasks():
        client.post(f"/t/acme/pools/{pool.pk}/connect/")
    with scopes_disabled():
        mine = Session.objects.get(user__username="member")
        theirs = Session.objects.get(user__username="admin")

    html = client.get("/t/acme/sessions/").content.decode()
    assert f'data-session="{mine.pk}"' in html and str(theirs.pk) not in html
    assert 'data-action="end"' in element(html, f'data-session="{mine.pk}"')

    with run_tasks():
        response = client.post(f"/t/acme/sessions/{mine.pk}/end/", {"next": "sessions"})
    assert response.status_code == 302 and response.headers["Location"] == "/t/acme/sessions/"
    html = client.get("/t/acme/sessions/").content.decode()
    assert "No live sessions" in html and "Ended by the user" in html
    assert logged_in("outsider").get("/t/acme/sessions/").status_code == 404
