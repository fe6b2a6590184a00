"""Libvirt XML for tenant networks and the desktops' traffic filter, built in this one place.

Every tenant gets a network of its own on each host its desktops run on (docs/hosts.md):

- ``tenant`` hosts: an **isolated** libvirt network (no ``<forward>``: nothing is routed off
  the host, and libvirt's firewall rejects traffic between it and any other network) with a
  subnet of its own and DHCP from the host. The tenant's desktops on that host share it.
- ``vlan`` hosts: a libvirt network on the host's Open vSwitch bridge that tags the tenant's
  VLAN, so the tenant's desktops on every host share one layer-2 segment on the trunk, kept
  apart from every other tenant's by the switches; routing, DHCP and any way out are the
  operator's, per VLAN.

Every interface carries the ``vdi-clean-traffic`` filter: libvirt's ``clean-traffic`` (no
MAC, IP or ARP spoofing, nothing but IPv4 and ARP) and no DHCP server answers from a guest.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

# A new version of the filter gets a new name: domains name the version they were defined
# with, and a host keeps the old one until no domain uses it.
TRAFFIC_FILTER = "vdi-clean-traffic-v1"


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    # ``isolated``: ``bridge`` is the Linux bridge libvirt makes; ``subnet`` its addresses.
    # ``vlan``: ``bridge`` is the host's Open vSwitch bridge; ``vlan`` the tenant's tag.
    kind: str
    bridge: str
    subnet: str = ""
    vlan: int | None = None

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


def filter_parameters(spec: NetworkSpec) -> dict[str, str]:
    """What the filter is told about an interface on ``spec``: its IP address is the one
    DHCP gave it (from the host's DHCP server on an isolated network). The MAC address is
    the interface's own."""
    params = {"CTRL_IP_LEARNING": "dhcp"}
    if spec.gateway:
        params["DHCPSERVER"] = spec.gateway
    return params
