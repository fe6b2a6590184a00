"""The browser console for real: headless Chromium (Debian's, driven by Playwright) logs in to
the portal (pytest-django's live server), opens a session's console page, and noVNC shows the
lab guest's screen through a real `manage.py console_proxy` process and QEMU's VNC display,
with the password a real Celery worker set on the live domain.

Nothing is downloaded: Playwright launches /usr/bin/chromium (scripts/lab installs it) and
noVNC comes from node_modules/ (scripts/setup). Missing either is a failure, never a skip.

VDI_SAVE_SCREENSHOTS=1 writes the console page to docs/img/browser-console.png.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from PIL import Image

from brokers.choices import SessionState, TicketKind
from brokers.models import Session
from brokers.services import ticket_issue
from tenants.scoping import scopes_disabled
from tests.brokers.test_console_proxy import free_port, ws_handshake
from tests.conftest import PASSWORD
from tests.e2e.lab import desktop_in, serial_log, tail
from tests.processes import ROOT, running, wait_for
from vdi.choices import DesktopState

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs as root in a container (LAB.md); Playwright adds its own automation flags.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCREENSHOT = ROOT / "docs" / "img" / "browser-console.png"
RFB_BANNER = b"RFB 003.008"


def timing(what: str, seconds: float) -> None:
    # Shown with `pytest -s` (or -rP); the report quotes these.
    print(f"[browser console] {what}: {seconds:.2f} s", file=sys.stderr)


@pytest.fixture
def browser_prerequisites():
    """Fail at once, before a guest boots, when the browser side cannot work."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser console test needs Debian's chromium "
                    "(scripts/lab start installs it with fonts-dejavu-core)", pytrace=False)
    if not (ROOT / "node_modules/@novnc/novnc/core/rfb.js").exists():
        pytest.fail("noVNC is missing (node_modules/@novnc/novnc): run scripts/setup",
                    pytrace=False)


@pytest.fixture
def chromium(browser_prerequisites, monkeypatch):
    """Debian's Chromium under Playwright; never a browser of Playwright's own."""
    # Belt and braces: nothing may look for, or fetch, Playwright's browser builds.
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", "/nonexistent/playwright-browsers")
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    # Playwright's sync API keeps an asyncio loop running in this thread (in a greenlet),
    # which makes Django refuse the test's own database calls; they are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        timing("Chromium launch (with Playwright's driver)", time.monotonic() - started)
        try:
            yield browser
        finally:
            # While Playwright's loop runs, Django keeps this thread's database connections
            # apart (asgiref's "async" storage): close those the test opened meanwhile, or
            # they outlive the test and block the test database's teardown.
            connections.close_all()
            browser.close()


@pytest.fixture
def console_proxy(tmp_path, live_server, lab):
    """A real `manage.py console_proxy` on a free port, allowing the live portal's origin;
    the portal sends browsers to it."""
    port = free_port()
    command = [sys.executable, "manage.py", "console_proxy", "--listen", f"127.0.0.1:{port}"]
    env = {"VDI_CONSOLE_ALLOWED_ORIGINS": live_server.url}
    started = time.monotonic()
    with running(command, tmp_path / "proxy.log", "console proxy listening", env) as log:
        timing("console proxy start", time.monotonic() - started)
        previous = settings.VDI
        settings.VDI = {**previous, "CONSOLE_PROXY_URL": f"ws://127.0.0.1:{port}/"}
        try:
            yield port, log
        finally:
            settings.VDI = previous


def non_black_pixels(png: bytes) -> int:
    gray = Image.open(io.BytesIO(png)).convert("L")
    return sum(count for level, count in enumerate(gray.histogram()) if level > 48)


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
    chromium,
):
    proxy_port, proxy_log = console_proxy
    pool = lab_pool(min_ready=1)
    desktop = desktop_in(pool, DesktopState.RUNNING, worker)
    wait_for(lambda: lab["VDI_LAB_READY_LINE"] in serial_log(desktop), 90,
             lambda: f"the guest's ready line (serial log: {serial_log(desktop)[-2000:]!r})")
    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200, response.content
    session_id = response.json()["session"]
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
    if os.environ.get("VDI_SAVE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

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
