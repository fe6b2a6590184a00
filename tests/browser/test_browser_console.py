"""The browser console for real: headless Chromium (Debian's, driven by Playwright) logs in to
the portal (pytest-django's live server), opens a session's console page, and noVNC shows the
lab guest's screen through a real `manage.py console_proxy` process and QEMU's VNC display,
with the password a real Celery worker set on the live domain.

VDI_SAVE_SCREENSHOTS=1 writes the console page to docs/img/browser-console.png (see
conftest.py for the browser, its prerequisites and the screenshots).
"""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from brokers.choices import SessionState, TicketKind
from brokers.models import Session
from brokers.services import ticket_issue
from tenants.scoping import scopes_disabled
from tests.brokers.test_console_proxy import ws_handshake
from tests.browser.helpers import non_black_pixels, timing
from tests.conftest import PASSWORD
from tests.e2e.lab import desktop_in, pool_settled, serial_log, tail
from tests.processes import wait_for
from vdi.choices import DesktopState

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RFB_BANNER = b"RFB 003.008"


def websocket_from_page(page, url: str) -> str:
    """What the page's own `new WebSocket(url)` gets: "open", or how it failed."""
    return page.evaluate("""(url) => new Promise((resolve) => {
        const ws = new WebSocket(url);
        const timer = setTimeout(() => resolve("timeout"), 15000);
        ws.onopen = () => { clearTimeout(timer); ws.close(); resolve("open"); };
        ws.onclose = (event) => { clearTimeout(timer); resolve(`closed ${event.code}`); };
    })""", url)


def test_novnc_in_chromium_shows_the_guest_through_the_proxy_and_the_token_works_once(
    browser_prerequisites, lab, lab_pool, api, users, worker, live_server, console_proxy,
    chromium, screenshot,
):
    proxy_port, proxy_log = console_proxy
    pool = lab_pool(min_ready=1)
    desktop = desktop_in(pool, DesktopState.RUNNING, worker)
    wait_for(lambda: lab["VDI_LAB_READY_LINE"] in serial_log(desktop), 90,
             lambda: f"the guest's ready line (serial log: {serial_log(desktop)[-2000:]!r})")
    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200, response.content
    session_id = response.json()["session"]
    pool_settled(pool, worker)  # the spare it took is replaced before the page loads
    assert response.json()["console_url"].endswith(f"/t/acme/sessions/{session_id}/console/")

    page = chromium.new_page(viewport={"width": 1024, "height": 700})
    messages = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))

    def diagnostics() -> str:
        return (f"page said: {messages}\nstatus: {page.inner_text('#status')!r}\n"
                f"proxy log:\n{tail(proxy_log)}\nworker log:\n{tail(worker)}")

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("main form button[type=submit]")

    started = time.monotonic()
    console = page.goto(f"{live_server.url}/t/acme/sessions/{session_id}/console/")
    assert console.status == 200
    assert "no-store" in console.headers["cache-control"]
    try:
        page.wait_for_selector('#status[data-state="connected"]', timeout=30_000)
    except Exception as error:  # noqa: BLE001 - explained below
        raise AssertionError(f"the console never connected: {error}\n{diagnostics()}") from None
    timing("console page opened → noVNC connected (ticket, proxy, VNC login)",
           time.monotonic() - started)

    # The guest's screen, scaled into the window: not blank.
    canvas = page.locator("#screen canvas")
    shot = wait_for(lambda: (lambda png: png if non_black_pixels(png) > 200 else None)(
        canvas.screenshot()), 20, lambda: f"the guest's screen in the canvas\n{diagnostics()}")
    assert Image.open(io.BytesIO(shot)).size[0] > 100
    screenshot(page, "browser-console", docs=True)

    # The broker heard from the proxy: the session is connected, from the browser's address.
    def connected():
        with scopes_disabled():
            return Session.objects.get(pk=session_id).state == SessionState.CONNECTED

    wait_for(connected, 10, lambda: f"the session to be connected\n{diagnostics()}")

    # The page's token worked once: the same URL again is refused, from the page itself (the
    # right Origin) and from a raw client.
    used_url = page.evaluate(
        "JSON.parse(document.getElementById('console-config').textContent).url")
    assert websocket_from_page(page, used_url).startswith("closed"), diagnostics()
    used_path = "/" + used_url.split("/", 3)[3]
    assert ws_handshake(proxy_port, used_path, live_server.url)[0] == 403

    # A fresh browser ticket, offered from a foreign origin: refused, and not used up by it.
    with scopes_disabled():
        session = Session.objects.select_related("desktop", "pool").get(pk=session_id)
        fresh = ticket_issue(session=session, user=users["member"], kind=TicketKind.BROWSER)
    assert fresh is not None and fresh.ticket.password_applied
    assert ws_handshake(proxy_port, f"/?token={fresh.token}", "http://evil.example")[0] == 403
    assert ws_handshake(proxy_port, f"/?token={fresh.token}", None)[0] == 403  # no Origin
    status, received = ws_handshake(proxy_port, f"/?token={fresh.token}", live_server.url,
                                    read_s=3)
    assert status == 101 and RFB_BANNER in received, received  # QEMU's VNC greeting

    # The toolbar is live once connected (not pressed: the lab guest's init would reboot).
    assert page.is_enabled("#ctrl-alt-del") and page.is_visible("#fullscreen")
    assert page.get_attribute("#status", "data-state") == "connected"

    page.close()
    output = proxy_log.read_text()
    token = used_url.split("token=", 1)[1]
    assert token not in output and fresh.token not in output, "a token reached the proxy's log"
    assert "token=***" in output and "Invalid Origin" in output
