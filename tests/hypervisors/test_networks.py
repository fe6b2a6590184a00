"""Tenant networks and traffic filters, on libvirt's test driver (the real guests' traffic is
proved in tests/e2e/test_networks.py)."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

import libvirt
import pytest

from hypervisors.choices import HostState
from hypervisors.drivers import Unsupported
from hypervisors.drivers.libvirt_driver import LibvirtDriver
from hypervisors.models import Host, HostNetwork, TenantSegment
from hypervisors.network_xml import (
    TENANT_ONLY_FILTER,
    TRAFFIC_FILTER,
    NetworkSpec,
    all_filters,
    build_filter_xml,
    build_network_xml,
)
from hypervisors.services import host_check
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import tenant_create
from vdi.choices import OperationKind
from vdi.models import Desktop, Operation
from vdi.services import operation_create, pool_create, pool_update


# The tests look across tenants: tenant rows through the unscoped base manager.


@pytest.fixture
def libvirt_conn():
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def desktops_of(pool) -> list[Desktop]:
    with scopes_disabled():
        return list(Desktop.objects.filter(pool=pool).select_related("host").order_by("name"))


def interface_of(conn, desktop: Desktop) -> ET.Element:
    root = ET.fromstring(conn.lookupByName(desktop.name).XMLDesc(0))
    interfaces = root.findall("./devices/interface")
    assert len(interfaces) == 1
    return interfaces[0]


def delete(desktop: Desktop, run_tasks) -> None:
    with run_tasks(), scopes_disabled():
        operation_create(desktop=desktop, kind=OperationKind.DELETE, actor=None)


# --- the XML --------------------------------------------------------------------------------
def test_an_isolated_network_has_no_way_out_and_hands_out_addresses_of_its_subnet():
    root = ET.fromstring(build_network_xml(NetworkSpec(
        name="vdi-t3", kind="isolated", bridge="vdi-t3", subnet="10.128.3.0/24")))

    assert root.find("forward") is None  # isolated: libvirt routes nothing off the host
    assert root.find("bridge").get("name") == "vdi-t3"
    ip = root.find("ip")
    assert (ip.get("address"), ip.get("prefix")) == ("10.128.3.1", "24")
    dhcp = ip.find("dhcp/range")
    assert (dhcp.get("start"), dhcp.get("end")) == ("10.128.3.10", "10.128.3.254")


def test_a_vlan_network_tags_the_tenants_vlan_on_the_open_vswitch_bridge():
    root = ET.fromstring(build_network_xml(NetworkSpec(
        name="vdi-t3", kind="vlan", bridge="br-desktops", vlan=103)))

    assert root.find("forward").get("mode") == "bridge"
    assert root.find("bridge").get("name") == "br-desktops"
    assert root.find("virtualport").get("type") == "openvswitch"
    assert root.find("vlan/tag").get("id") == "103"
    assert root.find("ip") is None  # addresses and routing are the tenant VLAN's own


def test_the_traffic_filter_is_clean_traffic_and_no_dhcp_server_answers():
    root = ET.fromstring(build_filter_xml())

    assert root.get("name") == TRAFFIC_FILTER
    assert [ref.get("filter") for ref in root.findall("filterref")] == ["clean-traffic"]
    (rule,) = root.findall("rule")
    assert (rule.get("action"), rule.get("direction")) == ("drop", "out")
    assert int(rule.get("priority")) < -650  # before clean-traffic accepts the guest's IPv4
    match = rule.find("ip")
    assert (match.get("protocol"), match.get("srcportstart"), match.get("srcportend")) == (
        "udp", "67", "67")


# --- on a (simulated) host ------------------------------------------------------------------
def test_a_tenants_desktops_share_its_own_filtered_network_on_the_host(
        make_pool, host, run_tasks, tenant, libvirt_conn, settings):
    with run_tasks():
        pool = make_pool(min_ready=2)
    desktops = desktops_of(pool)
    assert len(desktops) == 2

    segment = TenantSegment._base_manager.get(tenant=tenant)
    network = HostNetwork._base_manager.get(host=host, tenant=tenant)
    assert network.name == f"{settings.VDI['TENANT_NETWORK_NAME']}{segment.number}"
    first = ipaddress.ip_network(settings.VDI["TENANT_NETWORK_RANGE"]).network_address
    assert network.subnet == f"{first + 256 * segment.number}/24"
    libvirt_network = libvirt_conn.networkLookupByName(network.name)
    assert libvirt_network.isActive() and libvirt_network.autostart()
    for desktop in desktops:
        interface = interface_of(libvirt_conn, desktop)
        assert interface.get("type") == "network"
        assert interface.find("source").get("network") == network.name
        filterref = interface.find("filterref")
        # No egress by default: the tenant's desktops are kept in their subnet.
        assert filterref.get("filter") == TENANT_ONLY_FILTER
        params = {p.get("name"): p.get("value") for p in filterref.findall("parameter")}
        gateway = network.subnet.replace(".0/24", ".1")
        assert params == {"CTRL_IP_LEARNING": "dhcp", "DHCPSERVER": gateway,
                          "GATEWAY": gateway, "SUBNET": network.subnet.split("/")[0],
                          "PREFIX": "24"}
    assert network.kind == "isolated"


def test_two_tenants_never_share_a_network(make_pool, host, run_tasks, tenant, other_tenant,
                                           image, users, libvirt_conn):
    with run_tasks():
        ours = make_pool(min_ready=1)
        with tenant_scope(other_tenant):
            theirs = pool_create(tenant=other_tenant, actor=users["outsider"], name="Lab",
                                 image=image, min_ready=1, max_desktops=2, memory_mb=256)
    networks = {n.tenant_id: n for n in HostNetwork._base_manager.filter(host=host)}
    assert set(networks) == {tenant.id, other_tenant.id}
    assert networks[tenant.id].name != networks[other_tenant.id].name
    assert networks[tenant.id].subnet != networks[other_tenant.id].subnet
    (our_desktop,), (their_desktop,) = desktops_of(ours), desktops_of(theirs)
    assert (interface_of(libvirt_conn, our_desktop).find("source").get("network")
            == networks[tenant.id].name)
    assert (interface_of(libvirt_conn, their_desktop).find("source").get("network")
            == networks[other_tenant.id].name)


def test_the_network_goes_with_the_tenants_last_desktop_on_the_host(
        make_pool, host, run_tasks, tenant, users, libvirt_conn):
    with run_tasks():
        pool = make_pool(min_ready=2, max_desktops=2)
    first, _second = desktops_of(pool)
    name = HostNetwork._base_manager.get(host=host, tenant=tenant).name

    delete(first, run_tasks)  # one desktop left (or a new spare in its place)
    assert HostNetwork._base_manager.filter(host=host, tenant=tenant).exists()
    assert libvirt_conn.networkLookupByName(name).isActive()

    with run_tasks(), tenant_scope(tenant):
        pool_update(pool=pool, actor=users["admin"], min_ready=0)  # trims every spare
    assert desktops_of(pool) == []
    assert not HostNetwork._base_manager.filter(host=host, tenant=tenant).exists()
    assert name not in [n.name() for n in libvirt_conn.listAllNetworks(0)]

    # The tenant keeps its number: its next network there has the same name and subnet.
    with run_tasks(), tenant_scope(tenant):
        pool_update(pool=pool, actor=users["admin"], min_ready=1)
    assert HostNetwork._base_manager.get(host=host, tenant=tenant).name == name
    assert libvirt_conn.networkLookupByName(name).isActive()


def test_a_host_that_cannot_give_the_tenant_a_network_is_skipped_with_the_reason(
        make_pool, host, run_tasks, tenant, db):
    # Segments 0 and 1 are taken; this tenant gets 2, beyond the VLAN host's two tags.
    for number, slug in enumerate(("first", "second")):
        TenantSegment._base_manager.create(tenant=tenant_create(slug=slug, name=slug), number=number)
    vlan_host = Host.objects.create(
        name="aaa-vlan", uri="test:///default?host=vlan", virt_type="qemu",
        console_address="127.0.0.1", storage_pool="default-pool", state=HostState.UP,
        cpus=64, memory_mb=262144, network_mode="vlan", bridge="br-desktops",
        vlan_range="100-101",
    )  # the least committed and first by name: placement tries it first

    with run_tasks():
        pool = make_pool(min_ready=1)

    (desktop,) = desktops_of(pool)
    assert desktop.host == host  # not the VLAN host, never a shared network
    with scopes_disabled():
        operation = Operation.objects.get(desktop=desktop, kind=OperationKind.PROVISION)
    skipped = operation.params["placement_skipped"]
    assert list(skipped) == [str(vlan_host.pk)]
    assert skipped[str(vlan_host.pk)]["host"] == "aaa-vlan"
    assert "no VLAN tag for this tenant" in skipped[str(vlan_host.pk)]["reason"]
    assert not HostNetwork._base_manager.filter(host=vlan_host).exists()


def test_with_no_host_able_to_give_a_network_the_desktop_waits_with_the_reasons(
        make_pool, host, run_tasks, tenant, settings):
    settings.VDI = {**settings.VDI, "TENANT_NETWORK_RANGE": "10.128.0.0/24",
                    "TENANT_NETWORK_PREFIX": 24}
    TenantSegment._base_manager.create(tenant=tenant_create(slug="first", name="first"), number=0)

    with run_tasks():
        pool = make_pool(min_ready=1)

    (desktop,) = desktops_of(pool)
    assert desktop.host is None
    with scopes_disabled():
        operation = Operation.objects.get(desktop=desktop, kind=OperationKind.PROVISION)
    assert operation.state in ("pending", "failed")
    assert "skipped sim-1: VDI_TENANT_NETWORK_RANGE 10.128.0.0/24 has no /24 left" in (
        operation.error)
    assert not HostNetwork._base_manager.exists()


def test_a_host_that_lost_a_tenant_network_gets_it_back_at_its_next_check(
        make_pool, host, run_tasks, tenant, libvirt_conn):
    with run_tasks():
        make_pool(min_ready=1)
    name = HostNetwork._base_manager.get(host=host, tenant=tenant).name
    network = libvirt_conn.networkLookupByName(name)
    network.destroy()
    network.undefine()

    host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.UP, host.last_error
    assert libvirt_conn.networkLookupByName(name).isActive()


def test_a_real_host_that_cannot_filter_traffic_is_not_fit_for_desktops(db, host, monkeypatch):
    def no_nwfilter(self, name, xml):
        raise Unsupported("this function is not supported by the connection driver")

    monkeypatch.setattr(LibvirtDriver, "filter_ensure", no_nwfilter)
    monkeypatch.setattr(Host, "is_simulated", property(lambda self: False))
    monkeypatch.setattr(Host, "has_volume", lambda self, name: True)

    host_check(host=host)

    host.refresh_from_db()
    assert host.state == HostState.DOWN
    assert "cannot apply traffic filters" in host.last_error


def test_the_filter_is_defined_once_and_left_alone_after(db, host, monkeypatch):
    defined = []

    class FakeConn:
        def nwfilterLookupByName(self, name):
            if name not in defined:
                error = libvirt.libvirtError("no filter")
                error.err = (libvirt.VIR_ERR_NO_NWFILTER, 0, "no filter", 0, "", "", "", 0, 0)
                raise error

        def nwfilterDefineXML(self, xml):
            defined.append(ET.fromstring(xml).get("name"))

    monkeypatch.setattr(LibvirtDriver, "_connection", lambda self: FakeConn())
    driver = LibvirtDriver("qemu+tls://kvm1.example.com/system")
    for _check in range(2):
        for name, xml in all_filters():
            driver.filter_ensure(name, xml)

    # Each once, every filter after the ones it refers to.
    assert defined == [TRAFFIC_FILTER, "vdi-no-egress-v1", TENANT_ONLY_FILTER]


def test_a_host_without_a_network_gives_its_desktops_no_interface(
        make_pool, host, run_tasks, libvirt_conn):
    Host.objects.filter(pk=host.pk).update(network_mode="none")

    with run_tasks():
        pool = make_pool(min_ready=1)

    (desktop,) = desktops_of(pool)
    root = ET.fromstring(libvirt_conn.lookupByName(desktop.name).XMLDesc(0))
    assert root.findall("./devices/interface") == []
    assert not HostNetwork._base_manager.exists()


def test_a_tenant_kept_in_reaches_its_subnet_and_dhcp_only_never_the_host():
    chain_xml, root_xml = all_filters()[1][1], all_filters()[2][1]
    chain = ET.fromstring(chain_xml)
    assert chain.get("chain").startswith("ipv4")
    assert int(chain.get("priority")) > -710  # after clean-traffic's no-ip-spoofing
    rules = sorted(chain.findall("rule"), key=lambda rule: int(rule.get("priority")))
    assert [(r.get("action"), r.get("direction"), r.find("ip").attrib) for r in rules] == [
        ("return", "out", {"protocol": "udp", "dstportstart": "67", "dstportend": "67"}),
        ("drop", "out", {"dstipaddr": "$GATEWAY"}),
        ("return", "out", {"dstipaddr": "$SUBNET", "dstipmask": "$PREFIX"}),
        ("drop", "out", {}),
    ]
    root = ET.fromstring(root_xml)
    assert [ref.get("filter") for ref in root.findall("filterref")] == [
        TRAFFIC_FILTER, chain.get("name")]


def test_a_host_with_egress_makes_nat_networks(make_pool, host, run_tasks, tenant,
                                               libvirt_conn):
    Host.objects.filter(pk=host.pk).update(egress=True)

    with run_tasks():
        make_pool(min_ready=1)

    network = HostNetwork._base_manager.get(host=host, tenant=tenant)
    assert network.kind == "nat"
    root = ET.fromstring(libvirt_conn.networkLookupByName(network.name).XMLDesc(0))
    assert root.find("forward").get("mode") == "nat"


def test_owners_let_their_desktops_out_and_the_filters_follow_on_running_desktops(
        make_pool, host, run_tasks, tenant, users, api, libvirt_conn, monkeypatch):
    with run_tasks():
        pool = make_pool(min_ready=2)
    applied = []
    monkeypatch.setattr(LibvirtDriver, "interface_filter_set",
                        lambda self, name, traffic_filter, params: applied.append(
                            (name, traffic_filter, params)))

    assert api("admin").patch("/api/v1/tenants/acme/", {"desktop_egress": True},
                              format="json").status_code == 403
    with run_tasks():
        response = api("owner").patch("/api/v1/tenants/acme/", {"desktop_egress": True},
                                      format="json")
    assert response.status_code == 200, response.content
    assert response.json()["desktop_egress"] is True

    names = sorted(desktop.name for desktop in desktops_of(pool))
    assert sorted(name for name, _f, _p in applied) == names
    gateway = HostNetwork._base_manager.get(host=host, tenant=tenant).subnet.replace(
        ".0/24", ".1")
    assert {(f, tuple(sorted(p.items()))) for _n, f, p in applied} == {
        (TRAFFIC_FILTER, (("CTRL_IP_LEARNING", "dhcp"), ("DHCPSERVER", gateway)))}

    applied.clear()
    with run_tasks():
        api("owner").patch("/api/v1/tenants/acme/", {"desktop_egress": False}, format="json")
    assert {f for _n, f, _p in applied} == {TENANT_ONLY_FILTER}
    # A new desktop is defined with the current setting.
    with run_tasks(), tenant_scope(tenant):
        pool_update(pool=pool, actor=users["admin"], min_ready=3, max_desktops=3)
    assert len(desktops_of(pool)) == 3
    assert all(interface_of(libvirt_conn, d).find("filterref").get("filter")
               == TENANT_ONLY_FILTER for d in desktops_of(pool))
