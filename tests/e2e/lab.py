"""Helpers for end-to-end tests on the lab: waiting for desktops, reading logs."""

from __future__ import annotations

import re
import secrets
import socket
import time
from pathlib import Path

from django.conf import settings
from django.test import override_settings

from brokers.choices import SessionState
from brokers.models import Session
from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from tests.processes import wait_for
from vdi.choices import DesktopState
from vdi.models import Desktop, Operation


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text()[-chars:]


def desktop_in(pool, state: str, worker: Path) -> Desktop:
    """Wait for a desktop of ``pool`` in ``state``; a failed operation fails at once."""

    def reached():
        with scopes_disabled():
            failed = Operation.objects.filter(pool=pool, state="failed").first()
            assert failed is None, f"{failed.kind} failed: {failed.error}"
            return Desktop.objects.filter(pool=pool, state=state).first()

    return wait_for(reached, 120, lambda: f"a {state} desktop (worker log:\n{tail(worker)})")


def pool_settled(pool, worker: Path, timeout_s: float = 120) -> None:
    """Wait until ``pool`` has its ``min_ready`` running spares again and no operation
    unfinished: the spare a Connect took has been replaced, its guest (and tap device) made.
    A browser loading a page while the host's interfaces change may abort its requests
    (Chromium's ERR_NETWORK_CHANGED)."""

    def settled():
        with scopes_disabled():
            failed = Operation.objects.filter(pool=pool, state="failed").first()
            assert failed is None, f"{failed.kind} failed: {failed.error}"
            spares = Desktop.objects.filter(pool=pool, assigned_user=None,
                                            state=DesktopState.RUNNING).count()
            busy = Operation.objects.filter(pool=pool, state__in=("pending", "running"))
            return spares >= pool.min_ready and not busy.exists()

    wait_for(settled, timeout_s, lambda: f"pool {pool.name} settled (worker log:\n{tail(worker)})")


def wait_desktop(desktop: Desktop, state: str, worker: Path, timeout_s: float = 90) -> Desktop:
    def reached():
        with scopes_disabled():
            fresh = Desktop.objects.filter(pk=desktop.pk).first()
        return fresh if fresh is not None and fresh.state == state else None

    return wait_for(reached, timeout_s, lambda: f"{desktop.name} {state} "
                    f"(worker log:\n{tail(worker)})")


def session_connected(session_id, *logs: Path, timeout_s: float = 60) -> Session:
    """Wait until the product marks the session connected (the host's graphics event, which
    the host watcher applies); a time-out shows the end of each of ``logs``."""

    def connected():
        with scopes_disabled():
            session = Session.objects.get(pk=session_id)
        return session if session.state == SessionState.CONNECTED else None

    return wait_for(connected, timeout_s, lambda: "the session to be connected (" + "; ".join(
        f"{log.name}:\n{tail(log)}" for log in logs) + ")")


def serial_log(desktop: Desktop) -> str:
    path = Path(f"/var/log/libvirt/qemu/{desktop.name}-serial.log")
    return path.read_text(errors="replace") if path.exists() else ""


def register_lab_host(api, lab, worker: Path, *, name: str, uri: str, **fields) -> Host:
    """Register the lab's libvirtd as staff would, through the API (``fields`` add to or
    replace the lab's host fields), and wait for the worker's check to bring it up with its
    virt types and the lab's base volume. This is the lab: its own sshd's throwaway host key
    need not be verified (``no_verify=1``)."""
    with override_settings(VDI={**settings.VDI, "HOST_URI_ALLOW_NO_VERIFY": True}):
        response = api("staff").post("/api/v1/hosts/", {
            "name": name, "uri": uri, "virt_type": "qemu",
            "console_address": lab["VDI_LAB_CONSOLE_ADDRESS"],
            "storage_pool": lab["VDI_LAB_POOL"], "max_concurrent_boots": 2, **fields,
        }, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])

    def up():
        host.refresh_from_db()
        assert host.state in (HostState.NEW, HostState.UP), host.last_error
        return host.state == HostState.UP

    wait_for(up, 90, lambda: f"host {name} to come up (worker log:\n{tail(worker)})")
    assert "qemu" in host.virt_types
    assert lab["VDI_LAB_BASE_VOLUME"] in host.volumes
    return host


def guest_run(desktop: Desktop, command: str, timeout_s: float = 30) -> tuple[int, str]:
    """Run ``command`` in a lab guest's shell (its second serial port, a unix socket on the
    host: scripts/lab's guest and the desktop's domain XML); its exit status and output."""
    mark = secrets.token_hex(6)
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX) as channel:
        channel.connect(f"/var/lib/libvirt/qemu/{desktop.name}.cmd")
        channel.settimeout(0.5)
        channel.sendall(f"{command}; echo {mark}=$?\n".encode())
        output = ""
        while time.monotonic() < deadline:
            try:
                output += channel.recv(65536).decode(errors="replace")
            except socket.timeout:
                continue
            # The guest's tty may echo the command line: the status is on a line of its own.
            found = re.search(rf"(?:^|\n){mark}=(\d+)", output)
            if found:
                return int(found.group(1)), output[: found.start()]
    raise AssertionError(f"{desktop.name} did not finish {command!r} within {timeout_s} s:\n{output}")


def guest_address(desktop: Desktop, timeout_s: float = 60) -> str:
    """The IPv4 address DHCP gave the guest, from its serial log."""
    def leased():
        found = re.findall(r"VDI-GUEST-IP eth0 (\d+\.\d+\.\d+\.\d+)", serial_log(desktop))
        return found[-1] if found else None

    return wait_for(leased, timeout_s, lambda: f"{desktop.name} to lease an address "
                    f"(serial log:\n{serial_log(desktop)[-2000:]})")
