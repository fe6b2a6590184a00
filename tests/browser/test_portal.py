"""The portal as its users see it, in Chromium: a member connects and reaches a real guest's
console, then powers the desktop off and watches the dashboard follow; a tenant admin creates
a pool and watches its spares become ready; nobody sees another organisation's pages or pages
above their role.

Live parts are waited for on the page (Playwright's ``expect``), never by reloading it; a
mark set on the page before proves that no reload happened.

VDI_SAVE_SCREENSHOTS=1 writes docs/img/{preparing,console,dashboard,pools}.png.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from brokers.models import Session
from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from tests.browser.helpers import assert_not_reloaded, log_in, mark_page, non_black_pixels, timing
from tests.e2e.lab import serial_log, tail
from tests.processes import celery_worker, wait_for
from vdi.models import Pool

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# A real guest: provisioning, a boot slot and booting under TCG.
GUEST_TIMEOUT_MS = 120_000
# A simulated desktop: the worker's round trip plus a few polls.
LIVE_TIMEOUT_MS = 30_000


def state_of(page, desktop_id):
    return page.locator(f'[data-desktop="{desktop_id}"] [data-field="state"]')


@pytest.mark.e2e
def test_member_connects_sees_the_guest_then_powers_it_off_and_the_dashboard_follows(
    browser_prerequisites, lab, lab_pool, api, worker, live_server, live_polling,
    console_proxy, page, screenshot,
):
    # No spare: Connect has to make the desktop, so the preparing page shows.
    pool = lab_pool(kind="dedicated", min_ready=0, max_desktops=1)
    log_in(page, live_server, "member")
    page.goto(f"{live_server.url}/t/acme/")

    def diagnostics() -> str:
        return (f"page {page.url} said: {page.said}\n"
                f"worker log:\n{tail(worker)}\nproxy log:\n{tail(console_proxy[1])}")

    started = time.monotonic()
    page.locator(f'[data-pool-card="{pool.id}"] [data-action="connect"]').click()
    expect(page.locator('[data-field="connect-state"]')).to_have_text("Pending")
    screenshot(page, "preparing", docs=True)
    # The page moves on by itself once the desktop runs.
    open_console = page.locator('[data-action="open-console"]')
    try:
        expect(open_console).to_be_visible(timeout=GUEST_TIMEOUT_MS)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnostics()}") from None
    timing("Connect → session ready (provision and boot a real guest)",
           time.monotonic() - started)
    expect(page.locator('[data-action="download-vv"]')).to_be_visible()
    with scopes_disabled():
        session = Session.objects.select_related("desktop").get(pool=pool)
    desktop = session.desktop
    wait_for(lambda: lab["VDI_LAB_READY_LINE"] in serial_log(desktop), 90,
             lambda: f"the guest's ready line (serial log: {serial_log(desktop)[-2000:]!r})")

    # The console, in this tab or a new one as the link says.
    if open_console.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:
            open_console.click()
        console = opened.value
    else:
        open_console.click()
        console = page
    try:
        console.wait_for_selector('#status[data-state="connected"]', timeout=30_000)
    except Exception as error:  # noqa: BLE001 - Playwright's timeout, with what the page said
        raise AssertionError(f"the console never connected: {error}\n{diagnostics()}") from None
    canvas = console.locator("#screen canvas")
    wait_for(lambda: non_black_pixels(canvas.screenshot()) > 200, 20,
             lambda: f"the guest's screen in the console\n{diagnostics()}")
    screenshot(console, "console", docs=True)
    if console is not page:
        console.close()

    # Back on the dashboard: the desktop is the member's and runs.
    page.goto(f"{live_server.url}/t/acme/")
    state = state_of(page, desktop.id)
    expect(state).to_have_text("Running")
    screenshot(page, "dashboard", docs=True)

    mark_page(page)
    page.locator(f'[data-desktop="{desktop.id}"] [data-action="poweroff"]').click()
    page.wait_for_load_state()
    mark_page(page)  # again, should the button have submitted a plain form
    expect(state).to_have_text("Stopped", timeout=LIVE_TIMEOUT_MS)
    assert_not_reloaded(page)

    # Started from elsewhere (the API): the open dashboard shows it running, still unreloaded.
    response = api("member").post(f"/api/v1/tenants/acme/desktops/{desktop.id}/start/")
    assert response.status_code == 202, response.content
    expect(state).to_have_text("Running", timeout=GUEST_TIMEOUT_MS)
    assert_not_reloaded(page)


@pytest.fixture
def pool_image(request, image):
    """The image a new pool is made from, on a host that is up but not yet checked by any
    worker: the simulated one, or (``lab``) the lab's libvirtd with its tiny guest."""
    if request.param == "simulated":
        request.getfixturevalue("host")
        return image
    lab = request.getfixturevalue("lab")
    request.getfixturevalue("remove_guests")
    Host.objects.create(
        name="lab-1", uri=lab["VDI_LAB_URI"], virt_type="qemu", virt_types=["qemu"],
        console_address=lab["VDI_LAB_CONSOLE_ADDRESS"], storage_pool=lab["VDI_LAB_POOL"],
        volumes=[lab["VDI_LAB_BASE_VOLUME"]], state=HostState.UP, cpus=4, memory_mb=8192,
        max_concurrent_boots=2,
    )
    return request.getfixturevalue("lab_image")


@pytest.mark.parametrize("pool_image", [
    "simulated", pytest.param("lab", marks=pytest.mark.e2e),
], indirect=True)
def test_tenant_admin_creates_a_pool_and_watches_its_spares_become_ready(
    browser_prerequisites, pool_image, users, tmp_path, live_server, live_polling, page,
    screenshot, request,
):
    log_in(page, live_server, "admin")
    page.goto(f"{live_server.url}/t/acme/pools/")
    page.get_by_role("link", name="New pool").click()
    page.fill("#id_name", "Engineering")
    page.select_option("#id_image", value=str(pool_image.pk))
    page.fill("#id_min_ready", "2")
    page.fill("#id_max_desktops", "3")
    page.fill("#id_memory_mb", str(pool_image.default_memory_mb))
    with page.expect_navigation():
        page.get_by_role("button", name="Create pool").click()
    with scopes_disabled():
        pool = Pool.objects.filter(name="Engineering").first()
    assert pool is not None, f"no pool was created: {page.url}\n{page.inner_text('main')}"

    page.goto(f"{live_server.url}/t/acme/pools/")
    row = page.locator(f'[data-pool="{pool.id}"]')
    ready = row.locator('[data-field="ready"]')
    # No worker has run yet: the spares the new pool asked for are still queued.
    expect(ready).to_have_text("0")
    mark_page(page)
    on_lab = request.node.callspec.params["pool_image"] == "lab"
    with celery_worker(tmp_path, purge=False) as worker_log:  # purging would drop them
        try:
            expect(ready).to_have_text("2", timeout=GUEST_TIMEOUT_MS if on_lab
                                       else LIVE_TIMEOUT_MS)
        except AssertionError as error:
            raise AssertionError(f"{error}\nworker log:\n{tail(worker_log)}") from None
        expect(row.locator('[data-field="desktops"]')).to_have_text("2")
        assert_not_reloaded(page)
        # The docs show real guests (no simulated-host banner).
        screenshot(page, "pools", docs=on_lab)


def test_nobody_reaches_another_organisations_pages_or_pages_above_their_role(
    browser_prerequisites, users, live_server, chromium, screenshot,
):
    def visit(username: str, paths: dict[str, int]) -> None:
        context = chromium.new_context()
        page = context.new_page()
        log_in(page, live_server, username)
        for path, status in paths.items():
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == status, f"{username} {path}: {response.status}"
            if status != 200:
                # The product's own error page, not a bare server answer.
                expect(page.locator(".error-code")).to_have_text(str(status))
                expect(page.locator(".topbar")).to_be_visible()
                assert "Globex" not in page.content(), f"{path} shows the other tenant's name"
                screenshot(page, f"{username}-{status}-{path.strip('/').replace('/', '-')}")
        context.close()

    # A member of Acme: Globex's pages do not exist for them; Acme's admin pages are refused.
    visit("member", {
        "/t/acme/": 200,
        "/t/acme/sessions/": 200,
        "/t/globex/": 404,
        "/t/globex/pools/": 404,
        "/t/globex/sessions/": 404,
        "/t/acme/pools/": 403,
        "/t/acme/pools/new/": 403,
        "/t/acme/members/": 403,
    })
    # The same pages exist: Globex's admin reaches them.
    visit("outsider", {"/t/globex/": 200, "/t/globex/pools/": 200, "/t/globex/sessions/": 200})
