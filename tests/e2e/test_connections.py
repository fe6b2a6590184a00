"""The driver's connection to a real libvirtd: when the daemon restarts, the close callback
drops the cached connection, subscribers are told, and the next call reconnects."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hypervisors.drivers import EventKind
from hypervisors.drivers import TransientDriverError, libvirt_connections
from hypervisors.drivers.libvirt_driver import LibvirtDriver
from tests.processes import wait_for

pytestmark = pytest.mark.e2e

PIDFILE = Path("/run/libvirtd.pid")
SOCKET = Path("/run/libvirt/libvirt-sock")


def restart_libvirtd(lab) -> None:
    """Stop the lab's libvirtd and start it again as the lab does (its TLS listener and
    configuration included: later tests use them)."""
    pid = int(PIDFILE.read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "libvirtd to stop")
    subprocess.run(shlex.split(lab["VDI_LAB_LIBVIRTD_CMD"]), check=True, timeout=30)
    wait_for(SOCKET.exists, 30, "libvirtd's socket")


def test_a_restarted_daemon_closes_the_connection_and_the_next_call_reconnects(lab):
    driver = LibvirtDriver(lab["VDI_LAB_URI"], timeout_s=30)
    driver.list_domains()
    before = libvirt_connections._connections[driver.uri]
    closed = threading.Event()
    subscription = driver.subscribe(
        lambda event: closed.set() if event.kind == EventKind.CLOSED else None)

    restart_libvirtd(lab)

    assert closed.wait(30), "the close callback never ran"
    assert libvirt_connections._connections.get(driver.uri) is not before
    deadline = time.monotonic() + 30
    while True:  # the daemon may still be settling its drivers
        try:
            driver.list_domains()
            break
        except TransientDriverError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert libvirt_connections._connections[driver.uri] is not before
    subscription.cancel()
