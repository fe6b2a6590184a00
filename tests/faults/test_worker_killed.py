"""A Celery worker SIGKILLed in the middle of a provisioning on the lab's real libvirtd.

The worker is stopped right after a real driver call (tests/faults/stall.py): after ``define``
(the overlay and the domain exist, the desktop is ``provisioning``) or after ``start`` (the
guest runs, the desktop is ``starting``). Its message is gone with it (the filesystem broker
deletes a message when it hands it out; Redis would restore it only after its visibility
timeout, an hour), so what brings the operation back is the reaper: past its deadline the
operation is requeued and a second worker finishes it, with exactly one domain and one
overlay.
"""

from __future__ import annotations

import os
import signal

import pytest

from tenants.scoping import scopes_disabled
from tests.e2e.lab import register_lab_host, tail
from tests.faults.support import FAULT_ENV, wait_no_operation_stuck
from tests.processes import celery_worker, wait_for
from vdi.choices import DesktopState, OperationKind, OperationState
from vdi.models import Desktop, Operation

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Where the worker dies, and the state its provisioning is left in.
KILL_POINTS = {"define": DesktopState.PROVISIONING, "start": DesktopState.STARTING}


@pytest.mark.parametrize("after", KILL_POINTS)
def test_a_worker_killed_mid_provisioning_leaves_one_domain_and_one_overlay(
    after, lab, api, make_pool, lab_image, remove_guests, libvirt_conn, tmp_path, stopwatch
):
    marker = tmp_path / "stalled"
    doomed_env = {**FAULT_ENV, "DJANGO_SETTINGS_MODULE": "tests.faults.stall_settings",
                  "VDI_FAULTS_STALL_AFTER": after, "VDI_FAULTS_STALL_MARKER": str(marker)}
    with celery_worker(tmp_path, doomed_env, name="doomed") as doomed:
        register_lab_host(api, lab, doomed, name="lab-1", uri=lab["VDI_LAB_URI"])
        pool = make_pool(image=lab_image, memory_mb=160, protocol="spice", min_ready=1)
        wait_for(marker.exists, 60, lambda: f"the worker to reach {after} (log:\n{tail(doomed)})")
        os.kill(int(marker.read_text()), signal.SIGKILL)
        stopwatch.mark("killed")

    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
        operation = Operation.objects.get(desktop=desktop, kind=OperationKind.PROVISION)
    assert desktop.state == KILL_POINTS[after]
    assert (operation.state, operation.attempts) == (OperationState.RUNNING, 1)

    # A new worker (with beat: the reaper) and nothing else: no purge, no manual action.
    with celery_worker(tmp_path, FAULT_ENV, name="rescuer", purge=False, beat=True) as rescuer:
        def finished():
            operation.refresh_from_db()
            assert operation.state != OperationState.FAILED, operation.error
            return operation.state == OperationState.SUCCEEDED

        wait_for(finished, 60, lambda: f"the provisioning to finish (log:\n{tail(rescuer)})")
        stopwatch.mark("recovered")
        wait_no_operation_stuck(rescuer)

    with scopes_disabled():
        desktops = list(Desktop.objects.all())
    assert [d.pk for d in desktops] == [desktop.pk]  # the autoscaler made no second one
    desktop = desktops[0]
    assert desktop.state == DesktopState.RUNNING
    assert operation.attempts == 2  # the killed attempt and the one that finished
    assert "worker stopped answering" not in operation.error  # cleared on success
    assert libvirt_conn.lookupByName(desktop.name).isActive()
    storage = libvirt_conn.storagePoolLookupByName(lab["VDI_LAB_POOL"])
    storage.refresh(0)
    overlays = [name for name in storage.listVolumes() if name.startswith(desktop.name)]
    assert overlays == [desktop.volume_name]
    stopwatch.report(**{"kill to running": ("killed", "recovered")})
