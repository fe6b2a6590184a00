"""The demo's seed on the real lab: the lab's libvirtd keeps its domains between demo runs, so
`seed_demo` settles the kept database with them before any worker starts. Desktops are
provisioned (defined, not booted) into a storage pool of the test's own."""

from __future__ import annotations

import io
import uuid

import libvirt
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from brokers.choices import EndReason, SessionState
from brokers.models import Session
from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from vdi.choices import DesktopState
from vdi.models import Desktop, Pool
from vdi.services import desktop_create

pytestmark = pytest.mark.e2e

BASE = "seed-base.qcow2"


@pytest.fixture
def demo_storage(lab, libvirt_conn, tmp_path):
    """A `dir` storage pool of the test's own with a blank base volume; removed afterwards,
    with every domain whose disk is still in it."""
    name = f"vdi-seedtest-{uuid.uuid4().hex[:8]}"
    tmp_path.chmod(0o755)
    storage = libvirt_conn.storagePoolCreateXML(
        f"<pool type='dir'><name>{name}</name><target><path>{tmp_path}</path></target></pool>", 0)
    storage.createXML(f"<volume><name>{BASE}</name><capacity unit='M'>16</capacity>"
                      "<target><format type='qcow2'/></target></volume>", 0)
    yield name
    storage.refresh(0)
    for volume in storage.listVolumes():
        domain = volume.removesuffix(".qcow2")
        try:
            libvirt_conn.lookupByName(domain).undefine()
        except libvirt.libvirtError:
            pass  # the base volume, or a domain the seed removed
        storage.storageVolLookupByName(volume).delete(0)
    storage.destroy()  # transient: gone with its definition


def seed(lab, storage_pool: str) -> str:
    out = io.StringIO()
    call_command(
        "seed_demo", "--host-uri", lab["VDI_LAB_URI"], "--storage-pool", storage_pool,
        "--own-storage-pool", "--console-address", lab["VDI_LAB_CONSOLE_ADDRESS"],
        "--kernel", lab["VDI_LAB_KERNEL"], "--initrd", lab["VDI_LAB_INITRD"],
        "--cmdline", lab["VDI_LAB_CMDLINE"], "--base-volume", BASE, stdout=out,
    )
    return out.getvalue()


def test_seed_keeps_live_guests_forgets_lost_ones_and_removes_an_earlier_databases(
    db, lab, libvirt_conn, demo_storage, run_tasks,
):
    said = seed(lab, demo_storage)
    assert "host lab-1: up" in said, said
    host = Host.objects.get(name="lab-1")
    assert host.state == HostState.UP and BASE in host.volumes
    with scopes_disabled():
        office = Pool.objects.select_related("tenant").get(name="Office")
        with run_tasks():
            kept, lost, earlier = (desktop_create(pool=office, actor=None, start=False)
                                   for _ in range(3))
        for desktop in (kept, lost, earlier):
            desktop.refresh_from_db()
            assert desktop.state == DesktopState.STOPPED, desktop.last_error
        session = Session.objects.create(tenant=office.tenant, pool=office, desktop=lost,
                                         user=get_user_model().objects.get(username="alice"),
                                         state=SessionState.READY)
        Desktop.objects.filter(pk=earlier.pk).delete()  # as if the database were new
    libvirt_conn.lookupByName(lost.name).undefine()  # as if the lab had been stopped

    said = seed(lab, demo_storage)

    assert "1 desktop(s) still defined there from the last run, kept" in said, said
    assert f"gone forgotten ({lost.name})" in said, said
    assert f"earlier demo database removed ({earlier.name})" in said, said
    with scopes_disabled():
        assert set(Desktop.objects.values_list("name", flat=True)) == {kept.name}
        session.refresh_from_db()
    assert session.state == SessionState.ENDED and session.end_reason == EndReason.DESKTOP_LOST
    names = {dom.name() for dom in libvirt_conn.listAllDomains(0)}
    assert kept.name in names and earlier.name not in names
    volumes = set(libvirt_conn.storagePoolLookupByName(demo_storage).listVolumes())
    assert volumes == {BASE, f"{kept.name}.qcow2"}
