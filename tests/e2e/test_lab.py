"""The driver and the console clients against a real libvirtd + QEMU (TCG) guest.

No Django models: these prove what the simulated host cannot, that a linked clone boots, that
a ticket set on the live domain opens VNC and SPICE, and that locked, replaced and expired
tickets are refused by QEMU itself. Needs `scripts/lab start` (scripts/test runs it).

One guest (module scope) serves the console tests; the last two tests make one of their own
each, removed when the test ends, so at most two guests run at once.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hypervisors.domain_xml import DomainSpec, build_domain_xml
from hypervisors.drivers import PowerState
from hypervisors.drivers.libvirt_driver import LibvirtDriver

from .clients import ConsoleAuthFailed, spice_login, vnc_capture

pytestmark = pytest.mark.e2e

MEMORY_MB = 160
READY_TIMEOUT_S = 90  # ~4 s on an idle 2-core machine under TCG; generous for a busy one


@dataclass
class Guest:
    name: str
    volume: str
    disk_path: str
    serial_log: Path
    host: str
    # protocol -> the random password the domain XML carries, expired since 1970
    locked_passwords: dict[str, str] = field(default_factory=dict)
    boot_s: float = 0.0  # start to ready line

    def ports(self, driver: LibvirtDriver):
        return driver.console_ports(self.name)


def wait_for_ready(guest: Guest, ready_line: str, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds until the ready line shows up in the guest's serial log."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if ready_line in guest.serial_log.read_text(errors="replace"):
                return time.monotonic() - started
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    try:
        tail = guest.serial_log.read_text(errors="replace")[-2000:]
    except FileNotFoundError:
        tail = "(no serial log)"
    pytest.fail(f"{guest.name} printed no {ready_line!r} within {timeout_s:g} s; serial log:\n{tail}")


@pytest.fixture(scope="module")
def driver(lab) -> LibvirtDriver:
    return LibvirtDriver(lab["VDI_LAB_URI"], timeout_s=60)


def create_guest(lab, driver: LibvirtDriver) -> Guest:
    """A started guest on a fresh linked clone of the lab's base volume."""
    name = f"vdi-e2e-{uuid.uuid4().hex[:12]}"
    volume = f"{name}.qcow2"
    serial_log = Path(lab["VDI_LAB_SERIAL_LOG_DIR"]) / f"{name}-serial.log"
    disk_path = driver.create_overlay(lab["VDI_LAB_POOL"], volume, lab["VDI_LAB_BASE_VOLUME"],
                                      capacity_gb=1)
    guest = Guest(name=name, volume=volume, disk_path=disk_path, serial_log=serial_log,
                  host=lab["VDI_LAB_CONSOLE_ADDRESS"])
    xml = build_domain_xml(DomainSpec(
        name=name, uuid=str(uuid.uuid4()), virt_type="qemu", vcpus=1, memory_mb=MEMORY_MB,
        disk_path=disk_path, console_address=lab["VDI_LAB_CONSOLE_ADDRESS"],
        kernel=lab["VDI_LAB_KERNEL"], initrd=lab["VDI_LAB_INITRD"],
        cmdline=lab["VDI_LAB_CMDLINE"], serial_log=str(serial_log),
    ))
    for graphics in ET.fromstring(xml).iter("graphics"):
        guest.locked_passwords[graphics.get("type")] = graphics.get("passwd")
    try:
        driver.define(xml)
        driver.start(name)
    except BaseException:
        remove_guest(lab, driver, guest)
        raise
    return guest


def remove_guest(lab, driver: LibvirtDriver, guest: Guest) -> None:
    """Destroy before undefine (QEMU would outlive the definition), then the overlay."""
    driver.destroy(guest.name)
    driver.undefine(guest.name)
    driver.delete_volume(lab["VDI_LAB_POOL"], guest.volume)
    guest.serial_log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def guest(lab, driver):
    """One booted guest shared by the console tests: started, ready line seen."""
    booted = create_guest(lab, driver)
    try:
        booted.boot_s = wait_for_ready(booted, lab["VDI_LAB_READY_LINE"])
        yield booted
    finally:
        remove_guest(lab, driver, booted)


@pytest.fixture
def make_guest(lab, driver):
    """``make_guest()``: a guest of the test's own, removed when the test ends."""
    made: list[Guest] = []

    def make() -> Guest:
        made.append(create_guest(lab, driver))
        return made[-1]

    yield make
    for extra in made:
        remove_guest(lab, driver, extra)


def ticket_until(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def assert_vnc_refused(guest: Guest, port: int, password: str) -> None:
    with pytest.raises(ConsoleAuthFailed):
        vnc_capture(guest.host, port, password, timeout_s=15)


def assert_vnc_shows_screen(guest: Guest, port: int, password: str) -> None:
    image = vnc_capture(guest.host, port, password, timeout_s=15)
    # The guest's banner on the VGA text console: more than one colour on the screen.
    colours = image.convert("L").getextrema()
    assert image.width > 0 and image.height > 0
    assert colours[0] != colours[1], f"blank {image.width}x{image.height} framebuffer"


# --- the tests, in an order that keeps the locked state for the first console test ----------

def test_linked_clone_boots_and_prints_ready_line(lab, driver, guest, record_property):
    record_property("boot_to_ready_s", round(guest.boot_s, 2))
    assert driver.power_state(guest.name) == PowerState.RUNNING
    assert lab["VDI_LAB_READY_LINE"] in guest.serial_log.read_text()
    # A linked clone: a small qcow2 overlay whose backing file is the lab's base volume.
    base_path = str(Path(guest.disk_path).with_name(lab["VDI_LAB_BASE_VOLUME"]))  # `dir` pool
    header = Path(guest.disk_path).read_bytes()[:4096]
    assert header[:4] == b"QFI\xfb"
    assert base_path.encode() in header
    ports = guest.ports(driver)
    assert ports.vnc_port and ports.spice_port


def test_locked_consoles_refuse_the_domain_xml_password(driver, guest):
    # No ticket set yet: the passwords in the domain XML expired in 1970.
    ports = guest.ports(driver)
    assert_vnc_refused(guest, ports.vnc_port, guest.locked_passwords["vnc"])
    assert spice_login(guest.host, ports.spice_port, guest.locked_passwords["spice"]) is False


def test_ticket_opens_vnc_and_spice(driver, guest):
    ports = guest.ports(driver)
    driver.set_console_password(guest.name, "vnc", "vnc-tk1", ticket_until(300))
    driver.set_console_password(guest.name, "spice", "spice-ticket-one-123456", ticket_until(300))
    assert_vnc_shows_screen(guest, ports.vnc_port, "vnc-tk1")
    assert spice_login(guest.host, ports.spice_port, "spice-ticket-one-123456") is True
    assert_vnc_refused(guest, ports.vnc_port, "wrong-pw")
    assert spice_login(guest.host, ports.spice_port, "not-the-ticket") is False


def test_new_ticket_replaces_the_old_one(driver, guest):
    ports = guest.ports(driver)
    driver.set_console_password(guest.name, "vnc", "old-vnc", ticket_until(300))
    driver.set_console_password(guest.name, "spice", "old-spice-ticket", ticket_until(300))
    assert_vnc_shows_screen(guest, ports.vnc_port, "old-vnc")
    assert spice_login(guest.host, ports.spice_port, "old-spice-ticket") is True

    driver.set_console_password(guest.name, "vnc", "new-vnc", ticket_until(300))
    driver.set_console_password(guest.name, "spice", "new-spice-ticket", ticket_until(300))
    assert_vnc_refused(guest, ports.vnc_port, "old-vnc")
    assert spice_login(guest.host, ports.spice_port, "old-spice-ticket") is False
    assert_vnc_shows_screen(guest, ports.vnc_port, "new-vnc")
    assert spice_login(guest.host, ports.spice_port, "new-spice-ticket") is True


def test_ticket_is_refused_after_it_expires(driver, guest):
    ports = guest.ports(driver)
    # passwdValidTo has whole seconds: round up so the ticket lives at least 2 s.
    valid_until = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    driver.set_console_password(guest.name, "vnc", "short-v", valid_until)
    driver.set_console_password(guest.name, "spice", "short-spice-ticket", valid_until)
    assert spice_login(guest.host, ports.spice_port, "short-spice-ticket") is True
    assert_vnc_shows_screen(guest, ports.vnc_port, "short-v")

    # QEMU and spice-server compare whole seconds, SPICE on the monotonic clock from the
    # moment the ticket was set: the refusal comes 0-2 s after valid_until. Poll for it.
    deadline = valid_until + timedelta(seconds=6)
    refused = {"spice": False, "vnc": False}
    while not all(refused.values()) and datetime.now(timezone.utc) < deadline:
        time.sleep(0.25)
        now = datetime.now(timezone.utc)
        if not refused["spice"]:
            refused["spice"] = not spice_login(guest.host, ports.spice_port, "short-spice-ticket")
        if not refused["vnc"]:
            try:
                vnc_capture(guest.host, ports.vnc_port, "short-v", timeout_s=15)
            except ConsoleAuthFailed:
                refused["vnc"] = True
        for protocol, done in refused.items():
            if done:
                assert now >= valid_until, f"{protocol} refused the ticket before it expired"
    assert refused == {"spice": True, "vnc": True}, f"still accepted 6 s after expiry: {refused}"


def test_acpi_shutdown_powers_the_guest_off(lab, driver, make_guest):
    # The lab guest answers the ACPI power button (button.ko + evdev in its initramfs).
    booted = make_guest()
    wait_for_ready(booted, lab["VDI_LAB_READY_LINE"])
    driver.shutdown(booted.name)
    deadline = time.monotonic() + 30
    while driver.power_state(booted.name) != PowerState.STOPPED:
        assert time.monotonic() < deadline, "guest still running 30 s after an ACPI shutdown"
        time.sleep(0.2)
    assert "powering off" in booted.serial_log.read_text()


def test_destroy_undefine_delete_leaves_nothing(lab, driver, make_guest):
    doomed = make_guest()  # running; no need to wait for its boot
    assert driver.power_state(doomed.name) == PowerState.RUNNING
    assert driver.volume_exists(lab["VDI_LAB_POOL"], doomed.volume)

    driver.destroy(doomed.name)
    driver.undefine(doomed.name)
    driver.delete_volume(lab["VDI_LAB_POOL"], doomed.volume)

    assert driver.power_state(doomed.name) == PowerState.MISSING
    assert doomed.name not in driver.list_domains()
    assert not driver.volume_exists(lab["VDI_LAB_POOL"], doomed.volume)
    assert not Path(doomed.disk_path).exists()
    # Doing it all again (the fixture's clean-up will) is a no-op, not an error.
    remove_guest(lab, driver, doomed)
