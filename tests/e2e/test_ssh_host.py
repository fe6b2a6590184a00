"""A host registered with a ``qemu+ssh://`` URI works end to end, not just as valid syntax.

The lab's libvirtd is registered a second time, through the lab's private sshd
(``VDI_LAB_SSH_URI``: root@127.0.0.1:2222 with the lab's key, ``no_verify=1``), the way staff
register a remote host. A real Celery worker probes it over SSH (libvirt runs ``ssh`` and, on
the far side, ``virt-ssh-helper``) and provisions a desktop on it that QEMU really runs.
"""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from tests.processes import celery_worker, wait_for
from vdi.choices import DesktopState, ImageBoot
from vdi.models import Desktop, Image, Operation
from vdi.services import image_save

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def lab_ssh_uri(lab) -> str:
    """The lab's SSH URI; its absence fails the test (in the test, so it reads FAILED)."""
    uri = lab.get("VDI_LAB_SSH_URI", "")
    if not uri:
        pytest.fail("the lab has no SSH endpoint: lab.env lacks VDI_LAB_SSH_URI; rerun "
                    "`scripts/lab start` (it starts the lab's sshd on 127.0.0.1:2222)",
                    pytrace=False)
    assert uri.startswith("qemu+ssh://"), f"VDI_LAB_SSH_URI is not a qemu+ssh URI: {uri}"
    return uri


@pytest.fixture
def worker(tmp_path, lab):
    with celery_worker(tmp_path) as log:
        yield log


@pytest.fixture
def libvirt_conn(lab):
    """A direct connection on the local socket: the daemon's own view, not the SSH path's."""
    conn = libvirt.open(lab["VDI_LAB_URI"])
    yield conn
    conn.close()


@pytest.fixture(autouse=True)
def remove_guests(transactional_db, lab, libvirt_conn):
    """Guests outlive the test's database: destroy and remove the ones this test made."""
    yield
    with scopes_disabled():
        desktops = list(Desktop.objects.values_list("name", "volume_name"))
    storage = libvirt_conn.storagePoolLookupByName(lab["VDI_LAB_POOL"])
    for name, volume in desktops:
        try:
            dom = libvirt_conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass  # already gone
        try:
            storage.storageVolLookupByName(volume).delete(0)
        except libvirt.libvirtError:
            pass


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text()[-chars:]


def test_a_host_registered_with_a_qemu_ssh_uri_comes_up_and_runs_a_desktop(
    api, lab, make_pool, worker, libvirt_conn
):
    ssh_uri = lab_ssh_uri(lab)
    response = api("staff").post("/api/v1/hosts/", {
        "name": "lab-ssh", "uri": ssh_uri, "virt_type": "qemu",
        "console_address": lab["VDI_LAB_CONSOLE_ADDRESS"], "storage_pool": lab["VDI_LAB_POOL"],
        "max_concurrent_boots": 2,
    }, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])
    assert host.uri == ssh_uri  # the query (keyfile, no_verify) is kept as given

    def up():
        host.refresh_from_db()
        assert host.state in (HostState.NEW, HostState.UP), host.last_error
        return host.state == HostState.UP

    wait_for(up, 90, lambda: f"the SSH host to come up (worker log:\n{tail(worker)})")
    assert "qemu" in host.virt_types
    assert lab["VDI_LAB_BASE_VOLUME"] in host.volumes

    image = image_save(image=Image(
        name="lab-guest", version=1, base_volume=lab["VDI_LAB_BASE_VOLUME"], disk_gb=1,
        default_memory_mb=160, boot=ImageBoot.KERNEL, kernel=lab["VDI_LAB_KERNEL"],
        initrd=lab["VDI_LAB_INITRD"], cmdline=lab["VDI_LAB_CMDLINE"],
    ))
    pool = make_pool(image=image, memory_mb=160, protocol="spice", min_ready=1)

    def running():
        with scopes_disabled():
            failed = Operation.objects.filter(pool=pool, state="failed").first()
            assert failed is None, f"{failed.kind} failed: {failed.error}"
            return Desktop.objects.filter(pool=pool, state=DesktopState.RUNNING).first()

    desktop = wait_for(running, 120, lambda: f"a running desktop on the SSH host "
                       f"(worker log:\n{tail(worker)})")
    assert desktop.host_id == host.id
    assert libvirt_conn.lookupByName(desktop.name).isActive()
