"""The lab's libvirtd stopped and started again while two desktops run on it (real TCG guests).

While the daemon is down one guest's QEMU dies too (as a guest may crash while nobody is
watching). The host goes down after two missed checks and its desktops become unknown, their
sessions ending; when the daemon is back the host comes up and reconciliation gives each
desktop the state libvirt reports: the survivor running (and its console works again), the
other stopped. The daemon is down for a few seconds only, under the lab's lock, so no
`scripts/lab start` or `stop` of another run acts on it meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import subprocess
from pathlib import Path

import libvirt
import pytest

from brokers.choices import EndReason, SessionState
from brokers.models import Session
from hypervisors.choices import HostState
from tenants.scoping import scopes_disabled
from tests.e2e.lab import register_lab_host, tail, wait_desktop
from tests.faults.support import FAULT_ENV, wait_no_operation_stuck
from tests.processes import celery_worker, wait_for
from vdi.choices import DesktopState
from vdi.models import Desktop

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PIDFILE = Path("/run/libvirtd.pid")
SOCKET = Path("/run/libvirt/libvirt-sock")


class _Reconnecting:
    """The test's own view of the lab: a connection from before the restart is closed."""

    def __init__(self, uri: str):
        self.uri = uri
        self.conn = libvirt.open(uri)

    def __getattr__(self, name: str):
        try:
            self.conn.getLibVersion()
        except libvirt.libvirtError:
            self.conn = libvirt.open(self.uri)
        return getattr(self.conn, name)


@pytest.fixture
def libvirt_conn(lab):
    conn = _Reconnecting(lab["VDI_LAB_URI"])
    yield conn
    conn.close()


def pid_gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def qemu_pid(domain: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text())


def connect(api, role: str, pool) -> dict:
    response = api(role).post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code in (200, 202), response.content
    return response.json()


def test_a_restarted_libvirtd_takes_its_host_down_and_back_with_desktops_reconciled(
    lab, api, make_pool, lab_image, remove_guests, libvirt_conn, tmp_path, stopwatch
):
    # The daemon comes back as scripts/lab starts it (its TLS listener too).
    if not lab.get("VDI_LAB_LIBVIRTD_CMD"):
        pytest.fail("lab.env lacks VDI_LAB_LIBVIRTD_CMD; rerun `scripts/lab start`", pytrace=False)
    libvirtd_command = shlex.split(lab["VDI_LAB_LIBVIRTD_CMD"])
    with celery_worker(tmp_path, FAULT_ENV, beat=True) as worker:
        host = register_lab_host(api, lab, worker, name="lab-1", uri=lab["VDI_LAB_URI"])
        pool = make_pool(image=lab_image, memory_mb=160, protocol="spice", kind="dedicated")
        sessions = {role: connect(api, role, pool)["session"] for role in ("owner", "member")}
        with scopes_disabled():
            desktops = {role: Desktop.objects.get(pool=pool, assigned_user__username=role)
                        for role in sessions}
        for desktop in desktops.values():
            wait_desktop(desktop, DesktopState.RUNNING, worker)
        survivor, crashed = desktops["owner"], desktops["member"]
        crashed_qemu = qemu_pid(crashed.name)

        lock = (Path(os.environ.get("VDI_LAB_DIR") or "/var/cache/vdi-lab") / ".lock").open("w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            daemon = int(PIDFILE.read_text())
            stopwatch.mark("daemon stopping")
            os.kill(daemon, signal.SIGTERM)
            wait_for(lambda: pid_gone(daemon), 30, "libvirtd to stop")
            stopwatch.mark("daemon stopped")
            os.kill(crashed_qemu, signal.SIGKILL)

            def host_down():
                host.refresh_from_db()
                with scopes_disabled():
                    states = {d.state for d in Desktop.objects.filter(pool=pool)}
                return host.state == HostState.DOWN and states == {DesktopState.UNKNOWN}

            wait_for(host_down, 30, lambda: f"the host to go down (log:\n{tail(worker)})")
            stopwatch.mark("host down")
        finally:
            if not SOCKET.exists() or subprocess.run(["virsh", "-q", "-c", "qemu:///system",
                                                      "version"], capture_output=True).returncode:
                subprocess.run(libvirtd_command, check=True, timeout=30)
            wait_for(lambda: subprocess.run(["virsh", "-q", "-c", "qemu:///system", "version"],
                                            capture_output=True).returncode == 0,
                     30, "libvirtd to answer again")
            stopwatch.mark("daemon started")
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

        with scopes_disabled():
            ended = set(Session.objects.filter(pk__in=sessions.values()).values_list(
                "state", "end_reason"))
        assert ended == {(SessionState.ENDED, EndReason.DESKTOP_LOST)}

        wait_for(lambda: host.refresh_from_db() or host.state == HostState.UP, 30,
                 lambda: f"the host to come back (log:\n{tail(worker)})")
        wait_desktop(survivor, DesktopState.RUNNING, worker, timeout_s=30)
        stopped = wait_desktop(crashed, DesktopState.STOPPED, worker, timeout_s=30)
        stopwatch.mark("reconciled")
        assert stopped.assigned_user.username == "member"  # dedicated: still theirs
        assert libvirt_conn.lookupByName(survivor.name).isActive()
        assert not libvirt_conn.lookupByName(crashed.name).isActive()

        # The survivor's console works through the restarted daemon: a fresh ticket is set.
        ticket = connect(api, "owner", pool)
        assert ticket["state"] == "ready" and ticket["password_applied"] is True, ticket
        wait_no_operation_stuck(worker)

    stopwatch.report(**{"daemon away (SIGTERM to answering again)": ("daemon stopping",
                                                                     "daemon started"),
                        "to host down": ("daemon stopping", "host down"),
                        "daemon back to reconciled": ("daemon started", "reconciled")})
