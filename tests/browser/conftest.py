"""The portal in a real browser: Debian's Chromium, driven by Playwright, against
pytest-django's live server, with real processes behind it (a Celery worker, the console
proxy) and, for consoles, the hypervisor lab's real guests.

Nothing is downloaded: Playwright launches /usr/bin/chromium (scripts/lab installs it) and
noVNC comes from node_modules/ (scripts/setup). Missing either is a failure, never a skip.

Every screenshot is kept under ``$VDI_ARTIFACTS_DIR/browser/<test>/`` (default
``var/test-artifacts/``); with ``VDI_SAVE_SCREENSHOTS=1`` the ones the docs show are
written to ``docs/img/`` too.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from django.conf import settings
from django.db import connections

from tests.brokers.test_console_proxy import free_port
from tests.browser.helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, DOCS_IMG, POLL_S, timing
from tests.e2e.conftest import (  # noqa: F401  the lab's fixtures, for tests on real guests
    lab,
    lab_host,
    lab_image,
    lab_pool,
    libvirt_conn,
    remove_guests,
    worker,
)
from tests.processes import ROOT, running


@pytest.fixture
def browser_prerequisites():
    """Fail at once, before a guest boots, when the browser side cannot work."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
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
def page(chromium):
    """A fresh browser page (its own cookies). What the page logs is kept in ``page.said``
    for failure messages; confirmation dialogs are accepted, as a user would."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.said = []
    tab.on("console", lambda message: tab.said.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: tab.said.append(f"pageerror: {error}"))
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    context.close()


@pytest.fixture
def live_polling(settings):
    """The portal's live parts ask again every POLL_S seconds (while something changes)."""
    settings.VDI = {**settings.VDI, "PORTAL_POLL_S": POLL_S}


@pytest.fixture
def console_proxy(tmp_path, live_server):
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


@pytest.fixture
def screenshot(request):
    """``screenshot(page_or_locator, name, docs=False)``: keep a PNG among the test
    artifacts (browser/<test>/<name>.png); with ``docs`` and VDI_SAVE_SCREENSHOTS=1, as
    docs/img/<name>.png too."""
    folder = ARTIFACTS / "browser" / request.node.name.removeprefix("test_")
    folder.mkdir(parents=True, exist_ok=True)

    def take(target, name: str, *, docs: bool = False) -> bytes:
        png = target.screenshot()
        (folder / f"{name}.png").write_bytes(png)
        if docs and os.environ.get("VDI_SAVE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            (DOCS_IMG / f"{name}.png").write_bytes(png)
        return png

    return take
