"""Hosts that can't take desktops say why, and nothing half-made stays behind."""

from __future__ import annotations

import libvirt
import pytest

from hypervisors import services as host_services
from hypervisors.choices import HostState
from hypervisors.drivers import HostInfo, StorageInfo
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from vdi import services as vdi_services
from vdi.services import executors
from vdi.choices import DesktopState, OperationState
from vdi.models import Desktop, Operation


def run_until_settled(operation: Operation) -> Operation:
    with scopes_disabled():
        while operation.state == OperationState.PENDING:
            vdi_services.operation_run(operation_id=operation.id)
            operation.refresh_from_db()
    return operation


def test_no_host_with_the_images_base_volume_means_no_desktop_and_a_clear_reason(
    make_pool, run_tasks, api, tenant
):
    Host.objects.create(name="kvm-1", uri="qemu+tls://kvm1.example.com/system",
                        virt_type="kvm", console_address="kvm1.example.com", state=HostState.UP,
                        cpus=16, memory_mb=65536, volumes=["something-else.qcow2"])
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        assert not Desktop.objects.filter(pool=pool).exists()  # nothing doomed was made

    response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_capacity"

    with scopes_disabled():  # a desktop recorded before the volume vanished
        vdi_services.desktop_create(pool=pool, actor=None, start=True)
        operation = run_until_settled(Operation.objects.get(pool=pool))
        desktop = Desktop.objects.get(pool=pool)
    assert operation.state == OperationState.FAILED
    assert "base volume 'debian-v1.qcow2'" in operation.error
    assert desktop.state == DesktopState.ERROR and desktop.host is None


class _StubDriver:
    def __init__(self, virt_types):
        self.virt_types = virt_types

    def host_info(self):
        return HostInfo(hostname="kvm1", cpus=8, memory_mb=32768, hypervisor="QEMU",
                        simulated=False, virt_types=self.virt_types)

    def storage_info(self, pool):
        return StorageInfo(active=True, capacity_gb=100, free_gb=50, volumes=("base.qcow2",))

    def list_domains(self):
        return {}


def test_a_host_without_the_requested_virt_type_stays_down_with_the_reason(db, monkeypatch):
    monkeypatch.setattr(host_services, "driver_for", lambda host: _StubDriver(("qemu",)))
    host = Host.objects.create(name="kvm-1", uri="qemu+ssh://root@kvm1.example.com/system",
                               virt_type="kvm", console_address="kvm1.example.com")

    host_services.host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.DOWN
    assert "virt type 'kvm' is not offered by this host (it offers: qemu)" in host.last_error
    assert host.volumes == ["base.qcow2"]  # what it has is still recorded


def test_a_domain_that_cannot_be_defined_leaves_no_disk_behind(make_pool, host, run_tasks,
                                                               monkeypatch):
    monkeypatch.setattr(executors, "build_domain_xml", lambda spec: "<domain type='nonsense'/>")
    with run_tasks():
        pool = make_pool(min_stopped=1)
    with scopes_disabled():
        operation = Operation.objects.get(pool=pool)
        desktop = Desktop.objects.get(pool=pool)

    assert operation.state == OperationState.FAILED
    assert desktop.state == DesktopState.ERROR
    conn = libvirt.open("test:///default")
    try:
        volumes = conn.storagePoolLookupByName("default-pool").listVolumes()
    finally:
        conn.close()
    assert f"{desktop.name}.qcow2" not in volumes


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+tls://kvm.example.com/system"])
def test_real_hosts_need_the_base_volume_and_simulated_ones_do_not(uri, db):
    host = Host(uri=uri, volumes=["a.qcow2"])
    assert host.has_volume("a.qcow2") and not host.has_volume("b.qcow2")
    assert Host(uri="test:///default").has_volume("b.qcow2")
