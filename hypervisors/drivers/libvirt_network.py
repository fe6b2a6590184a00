"""Networks and traffic filters (nwfilters) on a libvirt host: LibvirtDriver's methods for
them, under hypervisors/drivers/libvirt_driver.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt


class LibvirtNetworks:
    """Mixed into LibvirtDriver, whose ``_call`` and ``_on_domain`` these use."""

    def network_ensure(self, name: str, xml: str) -> None:
        def ensure(conn):
            try:
                network = conn.networkLookupByName(name)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                network = conn.networkDefineXML(xml)
            if not network.isActive():
                network.create()
            if not network.autostart():
                network.setAutostart(1)  # back after the host restarts

        self._call(ensure)

    def list_networks(self) -> dict[str, bool]:
        return self._call(lambda c: {network.name(): bool(network.isActive())
                                     for network in c.listAllNetworks(0)})

    def network_remove(self, name: str) -> None:
        def remove(conn):
            try:
                network = conn.networkLookupByName(name)
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return
                raise
            if network.isActive():
                network.destroy()
            network.undefine()

        self._call(remove)

    def filter_ensure(self, name: str, xml: str) -> None:
        def ensure(conn):
            try:
                conn.nwfilterLookupByName(name)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_NWFILTER:
                    raise
                conn.nwfilterDefineXML(xml)

        self._call(ensure)

    def interface_filter_set(self, name: str, traffic_filter: str,
                             params: dict[str, str]) -> None:
        def refilter(dom):
            # The definition, then the live guest (libvirt swaps a live interface's filter).
            views = [(libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)]
            if dom.isActive():
                views.append((0, libvirt.VIR_DOMAIN_AFFECT_LIVE))
            for xml_flags, affect in views:
                interface = ET.fromstring(dom.XMLDesc(xml_flags)).find("./devices/interface")
                if interface is None:
                    return
                for old in interface.findall("filterref"):
                    interface.remove(old)
                filterref = ET.SubElement(interface, "filterref", filter=traffic_filter)
                for key, value in sorted(params.items()):
                    ET.SubElement(filterref, "parameter", name=key, value=value)
                dom.updateDeviceFlags(ET.tostring(interface, encoding="unicode"), affect)

        self._on_domain(name, refilter)
