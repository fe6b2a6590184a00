"""Libvirt domain XML for a desktop, built in this one place.

Every desktop gets a SPICE and a VNC display (SPICE for native clients, VNC for the browser
console proxy), both locked: their password expired long ago, so nothing connects until the
broker sets a ticket on the live domain.

SPICE listens on the console address clients dial; VNC only on the address the console
proxies dial (``vnc_address``, the host's ``vnc_listen_address``). A password change cuts
SPICE clients (``connected='disconnect'``) but never VNC ones, so no VNC client may reach
the display except through a proxy, which closes a console when its session ends.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

LOCKED_UNTIL = "1970-01-01T00:00:00"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    virt_type: str
    vcpus: int
    memory_mb: int
    disk_path: str
    console_address: str
    vnc_address: str = "127.0.0.1"
    # SPICE over TLS only (the host has a console CA): no clear SPICE port is offered.
    spice_tls: bool = False
    network: str = ""
    bridge: str = ""
    # The traffic filter libvirt applies to the interface, with its parameters: a guest that
    # sends with another MAC or IP than its own loses that traffic.
    traffic_filter: str = ""
    traffic_filter_params: dict[str, str] = field(default_factory=dict)
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    serial_log: str = ""
    # Lab images: a shell on the guest's second serial port, behind this unix socket.
    command_socket: str = ""
    title: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


METADATA_NS = "https://vdi.invalid/xmlns/desktop/1.0"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _graphics(devices: ET.Element, kind: str, address: str, tls: bool = False) -> None:
    # A random password that expired in 1970: the display is locked until a ticket is set.
    # VNC passwords are capped at 8 characters by QEMU.
    password = secrets.token_urlsafe(24)[: 8 if kind == "vnc" else 24]
    graphics = _sub(
        devices, "graphics", type=kind, autoport="yes", listen=address,
        passwd=password, passwdValidTo=LOCKED_UNTIL,
    )
    if kind == "vnc":
        graphics.set("connected", "keep")
    if tls:
        # Every channel over TLS: autoport then allocates a tlsPort and no clear port
        # (the host's qemu.conf must have spice_tls = 1).
        graphics.set("defaultMode", "secure")
    _sub(graphics, "listen", type="address", address=address)


def build_domain_xml(spec: DomainSpec) -> str:
    domain = ET.Element("domain", type=spec.virt_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    if spec.title:
        _sub(domain, "title", spec.title)
    if spec.metadata:
        metadata = _sub(domain, "metadata")
        ET.register_namespace("vdi", METADATA_NS)
        desktop = ET.SubElement(metadata, f"{{{METADATA_NS}}}desktop")
        for key, value in sorted(spec.metadata.items()):
            desktop.set(key, value)
    _sub(domain, "memory", str(spec.memory_mb), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus))

    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache="none")
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")

    if spec.network or spec.bridge:
        kind = "network" if spec.network else "bridge"
        interface = _sub(devices, "interface", type=kind)
        _sub(interface, "source", **{kind: spec.network or spec.bridge})
        _sub(interface, "model", type="virtio")
        if spec.traffic_filter:
            filterref = _sub(interface, "filterref", filter=spec.traffic_filter)
            for name, value in sorted(spec.traffic_filter_params.items()):
                _sub(filterref, "parameter", name=name, value=value)

    if spec.serial_log:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.serial_log)
        _sub(serial, "target", port="0")
    if spec.command_socket:
        channel = _sub(devices, "serial", type="unix")
        _sub(channel, "source", mode="bind", path=spec.command_socket)
        _sub(channel, "target", port="1")
    _sub(devices, "input", type="tablet", bus="usb")
    _graphics(devices, "spice", spec.console_address, tls=spec.spice_tls)
    _graphics(devices, "vnc", spec.vnc_address)
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    _sub(devices, "memballoon", model="virtio")

    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")
