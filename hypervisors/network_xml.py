"""Libvirt XML for tenant networks and the desktops' traffic filter, built in this one place.

Every tenant gets a network of its own on each host its desktops run on (docs/hosts.md):

- ``tenant`` hosts: an **isolated** libvirt network (no ``<forward>``: nothing is routed off
  the host, and libvirt's firewall rejects traffic between it and any other network) with a
  subnet of its own and DHCP from the host. The tenant's desktops on that host share it.
- ``vlan`` hosts: a libvirt network on the host's Open vSwitch bridge that tags the tenant's
  VLAN, so the tenant's desktops on every host share one layer-2 segment on the trunk, kept
  apart from every other tenant's by the switches; routing, DHCP and any way out are the
  operator's, per VLAN.

Every interface carries a filter: ``vdi-clean-traffic-v1`` is libvirt's ``clean-traffic`` (no
MAC, IP or ARP spoofing, nothing but IPv4 and ARP) and no DHCP server answers from a guest;
``vdi-tenant-only-v1`` adds, for a tenant whose desktops may not leave their network, IPv4
only to the tenant's own subnet.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

# A new version of a filter gets a new name: domains name the version they were defined
# with, and a host keeps the old one until no domain uses it.
TRAFFIC_FILTER = "vdi-clean-traffic-v1"
# The filter of a tenant whose desktops may not leave their network: TRAFFIC_FILTER, and IPv4
# out only to the tenant's own subnet (and DHCP), never to the host nor beyond it.
TENANT_ONLY_FILTER = "vdi-tenant-only-v1"
_NO_EGRESS_CHAIN = "vdi-no-egress-v1"


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    # ``isolated``: ``bridge`` is the Linux bridge libvirt makes; ``subnet`` its addresses.
    # ``vlan``: ``bridge`` is the host's Open vSwitch bridge; ``vlan`` the tenant's tag.
    kind: str
    bridge: str
    subnet: str = ""
    vlan: int | None = None
    # ``isolated`` only: NAT out through the host's routes (a host with egress); whose
    # desktops may use it is their traffic filter's business.
    nat: bool = False

    @property
    def gateway(self) -> str:
        """The host's own address on an isolated network (its DHCP server), or ''."""
        if not self.subnet:
            return ""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))


def build_network_xml(spec: NetworkSpec) -> str:
    network = ET.Element("network")
    ET.SubElement(network, "name").text = spec.name
    if spec.kind == "isolated":
        if spec.nat:
            ET.SubElement(network, "forward", mode="nat")
        ET.SubElement(network, "bridge", name=spec.bridge, stp="off", delay="0")
        subnet = ipaddress.ip_network(spec.subnet)
        hosts = list(subnet.hosts())
        ip = ET.SubElement(network, "ip", address=spec.gateway,
                           prefix=str(subnet.prefixlen))
        dhcp = ET.SubElement(ip, "dhcp")
        ET.SubElement(dhcp, "range", start=str(hosts[min(9, len(hosts) - 1)]),
                      end=str(hosts[-1]))
    elif spec.kind == "vlan":
        ET.SubElement(network, "forward", mode="bridge")
        ET.SubElement(network, "bridge", name=spec.bridge)
        ET.SubElement(network, "virtualport", type="openvswitch")
        vlan = ET.SubElement(network, "vlan")
        ET.SubElement(vlan, "tag", id=str(spec.vlan))
    else:
        raise ValueError(f"unknown network kind {spec.kind!r}")
    ET.indent(network)
    return ET.tostring(network, encoding="unicode")


def build_filter_xml() -> str:
    """``clean-traffic``, plus: a guest never answers as a DHCP server (UDP from port 67),
    checked before clean-traffic accepts the guest's own IPv4 traffic."""
    root = ET.Element("filter", name=TRAFFIC_FILTER, chain="root")
    ET.SubElement(root, "filterref", filter="clean-traffic")
    rule = ET.SubElement(root, "rule", action="drop", direction="out", priority="-750")
    ET.SubElement(rule, "ip", protocol="udp", srcportstart="67", srcportend="67")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def build_no_egress_xml() -> list[str]:
    """The filters of a tenant kept in its network: a chain after clean-traffic's spoofing
    checks (IPv4 chains run by priority; ``no-ip-spoofing`` is -710) that lets DHCP and the
    tenant's subnet through, and drops the rest, the host's own address included."""
    chain = ET.Element("filter", name=_NO_EGRESS_CHAIN, chain="ipv4-egress", priority="-705")
    for priority, action, match in (
        ("100", "return", {"protocol": "udp", "dstportstart": "67", "dstportend": "67"}),
        ("200", "drop", {"dstipaddr": "$GATEWAY"}),
        ("300", "return", {"dstipaddr": "$SUBNET", "dstipmask": "$PREFIX"}),
        ("400", "drop", {}),
    ):
        rule = ET.SubElement(chain, "rule", action=action, direction="out", priority=priority)
        ET.SubElement(rule, "ip", match)
    root = ET.Element("filter", name=TENANT_ONLY_FILTER, chain="root")
    ET.SubElement(root, "filterref", filter=TRAFFIC_FILTER)
    ET.SubElement(root, "filterref", filter=_NO_EGRESS_CHAIN)
    filters = []
    for element in (chain, root):
        ET.indent(element)
        filters.append(ET.tostring(element, encoding="unicode"))
    return filters


def all_filters() -> list[tuple[str, str]]:
    """Every filter a host needs, in the order they can be defined (a filter before the
    ones that refer to it): (name, xml)."""
    chain_xml, tenant_only_xml = build_no_egress_xml()
    return [(TRAFFIC_FILTER, build_filter_xml()), (_NO_EGRESS_CHAIN, chain_xml),
            (TENANT_ONLY_FILTER, tenant_only_xml)]


def interface_filter(spec: NetworkSpec, egress: bool) -> tuple[str, dict[str, str]]:
    """The filter of an interface on ``spec``, and its parameters. Its IP address is the one
    DHCP gave it (from the host's DHCP server on an isolated network); its MAC its own. A
    tenant without egress is kept in its subnet on an isolated network; on a VLAN, its
    way out is the VLAN's router."""
    params = {"CTRL_IP_LEARNING": "dhcp"}
    if not spec.gateway:
        return TRAFFIC_FILTER, params
    params["DHCPSERVER"] = spec.gateway
    if egress:
        return TRAFFIC_FILTER, params
    subnet = ipaddress.ip_network(spec.subnet)
    return TENANT_ONLY_FILTER, {**params, "GATEWAY": spec.gateway,
                                "SUBNET": str(subnet.network_address),
                                "PREFIX": str(subnet.prefixlen)}
