"""The browser console page when the portal cuts the console: noVNC in Chromium, connected to
the lab guest through a real `manage.py console_proxy`, and the session ended meanwhile."""

from __future__ import annotations

import time

import pytest

from tests.browser.helpers import log_in, timing
from tests.e2e.lab import desktop_in, pool_settled, tail
from vdi.choices import DesktopState

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_page_says_the_session_ended_when_the_proxy_cuts_its_console(
    lab_pool, api, worker, live_server, console_proxy, page, screenshot,
):
    """How: the member's page shows the connected console; an administrator ends the
    session through the API; within the proxy's recheck (2 s) plus a margin the status bar
    reads the proxy's close reason (the page reads the websocket's close code and reason)
    and offers the dashboard."""
    _proxy_port, proxy_log = console_proxy
    pool = lab_pool(min_ready=1, on_logoff="keep")
    desktop_in(pool, DesktopState.RUNNING, worker)
    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200, response.content
    session_id = response.json()["session"]
    pool_settled(pool, worker)  # the spare it took is replaced before the page loads

    def diagnostics() -> str:
        return (f"page said: {page.said}\nat {page.url}: "
                f"{page.locator('#status').all_inner_texts()}\nproxy log:\n{tail(proxy_log)}")

    log_in(page, live_server, "member")
    page.goto(f"{live_server.url}/t/acme/sessions/{session_id}/console/")
    try:
        page.wait_for_selector('#status[data-state="connected"]', timeout=30_000)
    except Exception as error:  # noqa: BLE001 - explained below
        raise AssertionError(f"the console never connected: {error}\n{diagnostics()}") from None
    assert page.is_hidden("#dashboard-link")

    ended = time.monotonic()
    response = api("admin").post(f"/api/v1/tenants/acme/sessions/{session_id}/end/")
    assert response.status_code == 200, response.content
    try:
        page.wait_for_selector('#status[data-state="ended"]', timeout=8_000)
    except Exception as error:  # noqa: BLE001 - explained below
        raise AssertionError(f"the page did not report the cut: {error}\n{diagnostics()}") \
            from None
    timing("session ended → the page says so", time.monotonic() - ended)
    assert page.inner_text("#status") == ("Your session ended (Ended by an administrator). "
                                          "Connect again from the dashboard.")
    assert page.is_visible("#dashboard-link") and page.is_disabled("#ctrl-alt-del")
    screenshot(page, "browser-console-ended")
