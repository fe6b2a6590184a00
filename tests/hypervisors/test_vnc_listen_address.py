"""Where a host's VNC displays listen: only on the address the console proxies dial, never
on the console address clients are given (QEMU keeps VNC clients through a password change,
so a reachable VNC display would let a native client outlive its session)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from vdi.models import Desktop

NEW_HOST = {"name": "kvm-9", "uri": "test:///default", "virt_type": "qemu",
            "console_address": "kvm9.example.com", "storage_pool": "default-pool"}


def test_a_new_host_listens_for_vnc_on_loopback_unless_told_otherwise(api, run_tasks):
    with run_tasks():
        response = api("staff").post("/api/v1/hosts/", NEW_HOST, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["vnc_listen_address"] == "127.0.0.1"


@pytest.mark.parametrize("console_address, vnc_address, accepted", [
    ("kvm9.example.com", "10.0.0.9", True),  # a management network only proxies reach
    ("192.0.2.9", "fd00::9", True),
    ("127.0.0.1", "127.0.0.1", True),  # one machine: nothing but loopback reaches either
    ("192.0.2.9", "192.0.2.9", False),  # what clients dial
    ("KVM9.example.com", "kvm9.example.com", False),
    ("kvm9.example.com", "0.0.0.0", False),  # every address, the console address too
    ("kvm9.example.com", "::", False),
    ("kvm9.example.com", "", False),
    ("kvm9.example.com", "10.0.0.9 10.0.0.10", False),
])
def test_vnc_may_not_listen_where_clients_reach(api, run_tasks, console_address, vnc_address,
                                                accepted):
    body = {**NEW_HOST, "console_address": console_address, "vnc_listen_address": vnc_address}
    with run_tasks():
        response = api("staff").post("/api/v1/hosts/", body, format="json")
    if accepted:
        assert response.status_code == 201, response.content
    else:
        assert response.status_code == 400, response.content
        assert "vnc_listen_address" in response.json()["error"]["details"], response.json()
        assert not Host.objects.filter(name="kvm-9").exists()


def test_staff_see_and_edit_it_in_the_admin(admin_client, host):
    page = admin_client.get(f"/admin/hypervisors/host/{host.pk}/change/").content.decode()
    assert 'name="vnc_listen_address"' in page and "only the console proxies" in page


def test_desktops_are_defined_with_vnc_on_the_hosts_vnc_listen_address(host, make_pool,
                                                                       run_tasks):
    """Through provisioning on the simulated host: the domain libvirt holds."""
    Host.objects.filter(pk=host.pk).update(console_address="192.0.2.7",
                                           vnc_listen_address="10.0.0.7")
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
    conn = libvirt.open("test:///default")
    try:
        root = ET.fromstring(conn.lookupByName(desktop.name).XMLDesc(0))
    finally:
        conn.close()
    listens = {g.get("type"): g.get("listen") for g in root.findall("./devices/graphics")}
    assert listens == {"spice": "192.0.2.7", "vnc": "10.0.0.7"}
