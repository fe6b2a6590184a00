"""Helpers for browser tests: where Chromium and the screenshots are, logging in, and proving
that a page changed without being reloaded."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import PASSWORD
from tests.processes import ROOT

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs as root in a container (LAB.md); Playwright adds its own automation flags.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("VDI_ARTIFACTS_DIR") or ROOT / "var" / "test-artifacts")
DOCS_IMG = ROOT / "docs" / "img"
# How often the portal's live parts ask again in these tests (the product's default is 2 s).
POLL_S = 0.5


def timing(what: str, seconds: float) -> None:
    # Shown with `pytest -s` (or -rP); the docs quote these.
    print(f"[browser] {what}: {seconds:.2f} s", file=sys.stderr)


def non_black_pixels(png: bytes) -> int:
    gray = Image.open(io.BytesIO(png)).convert("L")
    return sum(count for level, count in enumerate(gray.histogram()) if level > 48)


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert "/accounts/login/" not in page.url, f"{username} could not log in: {page.url}"


# A mark only a full page load removes: proves that what a test then waits for arrived
# through the page's live updates.
def mark_page(page) -> None:
    page.evaluate("window.vdiTestMark = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.vdiTestMark === true"), "the page was reloaded"
