"""Tenants apart on the wire, proved with real guests on the lab's libvirtd.

Three lab guests (busybox, virtio-net, an address by DHCP from their tenant's network): two
desktops of tenant A, one of tenant B. Every check is made from inside a guest, through its
command channel (a shell on its second serial port, tests/e2e/lab.py ``guest_run``):

| check                                  | how                                               |
|----------------------------------------|---------------------------------------------------|
| A reaches A                            | ``ping`` from A1 to A2's leased address            |
| B reaches neither A, on layer 2        | B adds A's subnet as on-link and ``arping``s and   |
|                                        | ``ping``s A1 and A2: no answer (another bridge)    |
| B reaches neither A, through the host  | B (allowed out of its network) routes A's subnet   |
|                                        | via its gateway (the host) and ``ping``s: no answer |
|                                        | (libvirt's firewall rejects traffic between        |
|                                        | isolated networks)                                 |
| A reaches not B either                 | the same two ways from A1 to B (A's own filter     |
|                                        | also keeps it in its subnet)                       |
| a changed MAC loses its traffic        | A1 sets another MAC and pings A2: no answer; back  |
|                                        | to its own MAC, the ping answers again             |
| a changed IP loses its traffic         | A1 takes another address of its subnet and pings   |
|                                        | A2: no answer; back to its lease, it answers       |
| nobody has a route off the machine     | no guest has a default route; the networks have no |
|                                        | ``<forward>`` (isolated)                           |
| egress as the tenant's settings say    | B may leave its network: it ``ping``s its gateway  |
|                                        | (the host) and is answered. A may not: its ping to |
|                                        | its gateway gets nothing, until its owner turns    |
|                                        | egress on (the API) and the running guest's filter |
|                                        | changes: then it is answered                       |

The only traffic is between the lab's guests and the host's own addresses on the lab's
isolated bridges: nothing is sent to an address outside this machine.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

import libvirt
import pytest

from hypervisors.models import HostNetwork
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import tenant_update
from tests.e2e.lab import guest_address, guest_run, tail
from tests.processes import wait_for
from vdi.choices import DesktopState
from vdi.models import Desktop
from vdi.services import pool_create, pool_delete

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
# The tests look across tenants: tenant rows through the unscoped base manager.


def running(pool, count: int, worker) -> list[Desktop]:
    def ready():
        with scopes_disabled():
            desktops = list(Desktop.objects.filter(pool=pool, state=DesktopState.RUNNING)
                            .order_by("name"))
        return desktops if len(desktops) == count else None

    return wait_for(ready, 180, lambda: f"{count} running desktops (worker log:\n{tail(worker)})")


def answered_within(desktop: Desktop, address: str, timeout_s: float = 30) -> bool:
    """A reach that must work: pings until one is answered. Just after a guest's lease,
    libvirt applies its filter again with the learned address; a ping in between is lost."""
    return wait_for(lambda: answers(desktop, address), timeout_s,
                    f"{desktop.name} to be answered by {address}")


def answers(desktop: Desktop, address: str) -> bool:
    status, _output = guest_run(desktop, f"ping -c 2 -W 2 {address}")
    return status == 0


def reaches_on_layer_2(desktop: Desktop, subnet: str, address: str) -> bool:
    guest_run(desktop, f"ip route replace {subnet} dev eth0")
    arp, _ = guest_run(desktop, f"arping -c 2 -w 3 -I eth0 {address}")
    return arp == 0 or answers(desktop, address)


def reaches_through_the_host(desktop: Desktop, subnet: str, gateway: str, address: str) -> bool:
    guest_run(desktop, f"ip route replace {subnet} via {gateway} dev eth0")
    return answers(desktop, address)


def test_a_tenants_desktops_reach_each_other_and_no_other_tenants(
        lab_pool, lab_image, other_tenant, users, worker, libvirt_conn, tenant):
    ours = lab_pool(min_ready=2, max_desktops=2)
    tenant_update(tenant=other_tenant, actor=users["staff"], desktop_egress=True)
    with tenant_scope(other_tenant):
        theirs = pool_create(tenant=other_tenant, actor=users["outsider"], name="Lab B",
                             image=lab_image, memory_mb=160, protocol="spice", min_ready=1,
                             max_desktops=1)
    a1, a2 = running(ours, 2, worker)
    (b,) = running(theirs, 1, worker)
    a1_ip, a2_ip, b_ip = guest_address(a1), guest_address(a2), guest_address(b)

    networks = {n.tenant_id: n for n in HostNetwork._base_manager.all()}
    net_a, net_b = networks[tenant.id], networks[other_tenant.id]
    assert ipaddress.ip_address(a1_ip) in ipaddress.ip_network(net_a.subnet)
    assert ipaddress.ip_address(a2_ip) in ipaddress.ip_network(net_a.subnet)
    assert ipaddress.ip_address(b_ip) in ipaddress.ip_network(net_b.subnet)
    for network in (net_a, net_b):  # isolated: nothing routed off the machine
        assert ET.fromstring(libvirt_conn.networkLookupByName(network.name).XMLDesc(0)).find(
            "forward") is None
    for desktop in (a1, a2, b):
        status, routes = guest_run(desktop, "ip route")
        assert status == 0 and "default" not in routes, routes

    # A reaches A.
    assert answered_within(a1, a2_ip)
    assert answered_within(a2, a1_ip)

    # B may leave its network: the host answers it. A may not: the host is out of reach.
    gateway_b = str(next(ipaddress.ip_network(net_b.subnet).hosts()))
    gateway_a = str(next(ipaddress.ip_network(net_a.subnet).hosts()))
    assert answered_within(b, gateway_b)
    assert not answers(a1, gateway_a)

    # B reaches neither desktop of A, nor A the desktop of B: not on layer 2, not through
    # the host.
    for address in (a1_ip, a2_ip):
        assert not reaches_on_layer_2(b, net_a.subnet, address)
        assert not reaches_through_the_host(b, net_a.subnet, gateway_b, address)
    assert not reaches_on_layer_2(a1, net_b.subnet, b_ip)
    assert not reaches_through_the_host(a1, net_b.subnet, gateway_a, b_ip)
    guest_run(a1, f"ip route del {net_b.subnet}")

    # A guest that sends with another MAC loses its traffic, and gets it back with its own.
    status, link = guest_run(a1, "cat /sys/class/net/eth0/address")
    own_mac = link.strip().splitlines()[-1]
    guest_run(a1, "ip link set eth0 address 52:54:00:de:ad:01")
    assert not answers(a1, a2_ip)
    guest_run(a1, f"ip link set eth0 address {own_mac}")
    assert answered_within(a1, a2_ip)  # with its own MAC again

    # ... and with another IP address of its own subnet.
    spare = str(ipaddress.ip_network(net_a.subnet)[200])
    guest_run(a1, f"ifconfig eth0 {spare} netmask 255.255.255.0")
    assert not answers(a1, a2_ip)
    guest_run(a1, f"ifconfig eth0 {a1_ip} netmask 255.255.255.0")
    assert answered_within(a1, a2_ip)  # with its lease again

    # A's owner lets its desktops out: the running guests' filters change, the host answers.
    tenant_update(tenant=tenant, actor=users["owner"], desktop_egress=True)
    assert answered_within(a1, gateway_a, 60)

    # B's last desktop goes (with its pool): so does B's network on the host; A's stays.
    with tenant_scope(other_tenant):
        pool_delete(pool=theirs, actor=users["outsider"])
    wait_for(lambda: not HostNetwork._base_manager.filter(pk=net_b.pk).exists(), 60,
             lambda: f"B's network to go (worker log:\n{tail(worker)})")
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.networkLookupByName(net_b.name)
    assert libvirt_conn.networkLookupByName(net_a.name).isActive()
