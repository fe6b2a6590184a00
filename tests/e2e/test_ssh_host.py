"""A host registered with a ``qemu+ssh://`` URI works end to end, not just as valid syntax.

The lab's libvirtd is registered a second time, through the lab's private sshd
(``VDI_LAB_SSH_URI``: root@127.0.0.1:2222 with the lab's key, ``no_verify=1``), the way staff
register a remote host. A real Celery worker probes it over SSH (libvirt runs ``ssh`` and, on
the far side, ``virt-ssh-helper``) and provisions a desktop on it that QEMU really runs.
"""

from __future__ import annotations

import pytest

from tests.e2e.lab import desktop_in, register_lab_host
from vdi.choices import DesktopState

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


def test_a_host_registered_with_a_qemu_ssh_uri_comes_up_and_runs_a_desktop(
    api, lab, make_pool, worker, libvirt_conn, lab_image
):
    ssh_uri = lab_ssh_uri(lab)
    host = register_lab_host(api, lab, worker, name="lab-ssh", uri=ssh_uri)
    assert host.uri == ssh_uri  # the query (keyfile, no_verify) is kept as given

    pool = make_pool(image=lab_image, memory_mb=160, protocol="spice", min_ready=1)

    desktop = desktop_in(pool, DesktopState.RUNNING, worker)
    assert desktop.host_id == host.id
    assert libvirt_conn.lookupByName(desktop.name).isActive()
