"""Imported by a worker that a test kills in the middle of a provisioning.

After the driver call named by ``VDI_FAULTS_STALL_AFTER`` (``define``: the overlay and the
domain exist; ``start``: the guest runs) has been made for real, the worker writes its pid to
``VDI_FAULTS_STALL_MARKER`` and stalls, so the kill lands at that exact point.
"""

import os
import time
from pathlib import Path

from hypervisors.drivers.libvirt_driver import LibvirtDriver


def _stall_after(call: str) -> None:
    original = getattr(LibvirtDriver, call)

    def stalled(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        Path(os.environ["VDI_FAULTS_STALL_MARKER"]).write_text(str(os.getpid()))
        time.sleep(600)
        return result

    setattr(LibvirtDriver, call, stalled)


_stall_after(os.environ["VDI_FAULTS_STALL_AFTER"])
