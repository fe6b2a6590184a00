"""The domain XML a desktop is defined with: valid for libvirt, locked consoles, right devices."""

from __future__ import annotations

import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest

from hypervisors.domain_xml import DomainSpec, build_domain_xml

CONSOLE_ADDRESS = "192.0.2.10"  # what clients dial
VNC_ADDRESS = "10.0.0.10"  # where only the console proxies reach the host


def make_spec(**overrides) -> DomainSpec:
    fields = {
        "name": "desk-1",
        "uuid": str(uuid.uuid4()),
        "virt_type": "kvm",
        "vcpus": 2,
        "memory_mb": 2048,
        "disk_path": "/var/lib/libvirt/images/desk-1.qcow2",
        "console_address": CONSOLE_ADDRESS,
        "vnc_address": VNC_ADDRESS,
    }
    fields.update(overrides)
    return DomainSpec(**fields)


DISK_BOOT = make_spec(
    network="default", title="Office / desk-1", metadata={"tenant": "acme", "pool": "p1"}
)
KERNEL_BOOT = make_spec(
    virt_type="qemu",
    kernel="/srv/images/vmlinuz",
    initrd="/srv/images/initrd.gz",
    cmdline="console=tty0 console=ttyS0",
    serial_log="/var/log/vdi/desk-1.serial.log",
)
BRIDGED = make_spec(bridge="br0")
SPICE_TLS = make_spec(spice_tls=True)


def parse(spec: DomainSpec) -> ET.Element:
    return ET.fromstring(build_domain_xml(spec))


def graphics(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("type"): g for g in root.findall("./devices/graphics")}


@pytest.fixture
def validator() -> str:
    # Never skip: an unvalidated domain XML is what this file exists to prevent.
    path = shutil.which("virt-xml-validate")
    if path is None:
        pytest.fail(
            "virt-xml-validate is missing: install it with "
            "`apt-get install -y --no-install-recommends libvirt-clients libxml2-utils` "
            "(scripts/setup does this)"
        )
    return path


@pytest.mark.parametrize("spec", [DISK_BOOT, KERNEL_BOOT, BRIDGED, SPICE_TLS],
                         ids=["disk-boot", "kernel-boot", "bridged", "spice-tls"])
def test_xml_validates_against_libvirt_schema(spec, validator, tmp_path):
    path = tmp_path / "domain.xml"
    path.write_text(build_domain_xml(spec))

    result = subprocess.run(
        [validator, str(path), "domain"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{path.read_text()}"


def test_schema_check_rejects_invalid_xml(validator, tmp_path):
    # The validation test above is only worth something if the validator can say no.
    root = parse(DISK_BOOT)
    ET.SubElement(root.find("./devices"), "no-such-device")
    path = tmp_path / "domain.xml"
    path.write_text(ET.tostring(root, encoding="unicode"))

    result = subprocess.run([validator, str(path), "domain"], capture_output=True, timeout=60)

    assert result.returncode != 0


@pytest.mark.parametrize("virt_type", ["kvm", "qemu"])
def test_domain_type_follows_virt_type(virt_type):
    assert parse(make_spec(virt_type=virt_type)).get("type") == virt_type


def test_identity_and_size():
    spec = make_spec(vcpus=3, memory_mb=1536)
    root = parse(spec)

    assert root.findtext("name") == spec.name
    assert root.findtext("uuid") == spec.uuid
    assert root.findtext("vcpu") == "3"
    assert root.find("memory").get("unit") == "MiB"
    assert root.findtext("memory") == "1536"


def test_disk_boot_boots_from_disk():
    os_el = parse(DISK_BOOT).find("os")

    assert os_el.find("boot").get("dev") == "hd"
    assert os_el.find("kernel") is None


def test_kernel_boot_has_kernel_initrd_cmdline_and_serial_log():
    root = parse(KERNEL_BOOT)
    os_el = root.find("os")

    assert os_el.findtext("kernel") == KERNEL_BOOT.kernel
    assert os_el.findtext("initrd") == KERNEL_BOOT.initrd
    assert os_el.findtext("cmdline") == KERNEL_BOOT.cmdline
    assert os_el.find("boot") is None
    serial = root.find("./devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == KERNEL_BOOT.serial_log


def test_no_serial_device_without_a_serial_log():
    assert parse(DISK_BOOT).find("./devices/serial") is None


@pytest.mark.parametrize("spec", [DISK_BOOT, KERNEL_BOOT, BRIDGED],
                         ids=["disk-boot", "kernel-boot", "bridged"])
def test_spice_listens_on_the_console_address_vnc_on_the_vnc_address_both_locked(spec):
    displays = graphics(parse(spec))

    assert set(displays) == {"spice", "vnc"}
    wanted = {"spice": CONSOLE_ADDRESS, "vnc": VNC_ADDRESS}
    for kind, element in displays.items():
        assert element.get("autoport") == "yes", kind
        assert element.get("listen") == wanted[kind], kind
        # One listen element each, on that address only: the VNC display is never on the
        # address clients dial (QEMU keeps VNC clients through a password change).
        (listen,) = element.findall("listen")
        assert listen.get("type") == "address", kind
        assert listen.get("address") == wanted[kind], kind
        assert element.get("passwd"), f"{kind} display has no password"
        valid_to = datetime.fromisoformat(element.get("passwdValidTo")).replace(
            tzinfo=timezone.utc
        )
        assert valid_to < datetime.now(timezone.utc), f"{kind} password has not expired"


def test_spice_tls_offers_spice_over_tls_only_and_leaves_vnc_alone():
    # defaultMode='secure': libvirt's autoport allocates a tlsPort and no clear port.
    tls = graphics(parse(SPICE_TLS))
    clear = graphics(parse(DISK_BOOT))

    assert tls["spice"].get("defaultMode") == "secure"
    assert tls["spice"].get("autoport") == "yes"
    assert tls["vnc"].get("defaultMode") is None
    assert clear["spice"].get("defaultMode") is None


def test_vnc_listens_on_loopback_unless_told_otherwise():
    spec = make_spec()
    fields = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
    del fields["vnc_address"]
    assert graphics(parse(DomainSpec(**fields)))["vnc"].get("listen") == "127.0.0.1"


def test_vnc_password_fits_qemu_limit():
    # Several builds: the length must hold for every random password, not just one.
    for _ in range(20):
        password = graphics(parse(DISK_BOOT))["vnc"].get("passwd")
        assert 1 <= len(password) <= 8


def test_each_build_gets_fresh_passwords():
    first, second = graphics(parse(DISK_BOOT)), graphics(parse(DISK_BOOT))

    for kind in ("spice", "vnc"):
        assert first[kind].get("passwd") != second[kind].get("passwd"), kind
    assert first["spice"].get("passwd") != first["vnc"].get("passwd")


def test_network_interface_only_when_a_network_is_set():
    with_network = parse(make_spec(network="desktops")).findall("./devices/interface")
    without_network = parse(make_spec(network="")).findall("./devices/interface")

    assert len(with_network) == 1
    assert with_network[0].get("type") == "network"
    assert with_network[0].find("source").get("network") == "desktops"
    assert with_network[0].find("model").get("type") == "virtio"
    assert without_network == []


def test_a_bridge_gives_a_bridged_virtio_interface():
    interfaces = parse(BRIDGED).findall("./devices/interface")

    assert [i.get("type") for i in interfaces] == ["bridge"]
    assert interfaces[0].find("source").get("bridge") == "br0"
    assert interfaces[0].find("model").get("type") == "virtio"


def test_disk_is_virtio_qcow2_on_the_overlay_path():
    path = "/pools/vdi/desk-7.qcow2"
    disks = parse(make_spec(disk_path=path)).findall("./devices/disk")

    assert len(disks) == 1
    disk = disks[0]
    assert (disk.get("type"), disk.get("device")) == ("file", "disk")
    assert disk.find("source").get("file") == path
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("target").get("bus") == "virtio"


def test_metadata_and_title_are_kept_and_escaped():
    root = parse(make_spec(title="R&D <lab>", metadata={"pool": "a\"b", "tenant": "acme"}))

    assert root.findtext("title") == "R&D <lab>"
    desktop = root.find("./metadata/{https://vdi.invalid/xmlns/desktop/1.0}desktop")
    assert desktop.attrib == {"pool": "a\"b", "tenant": "acme"}


def test_the_interface_carries_the_traffic_filter_and_its_parameters():
    spec = make_spec(network="vdi-t4", traffic_filter="vdi-clean-traffic-v1",
                     traffic_filter_params={"CTRL_IP_LEARNING": "dhcp",
                                            "DHCPSERVER": "10.128.4.1"})

    (interface,) = parse(spec).findall("./devices/interface")
    filterref = interface.find("filterref")
    assert filterref.get("filter") == "vdi-clean-traffic-v1"
    assert {p.get("name"): p.get("value") for p in filterref.findall("parameter")} == {
        "CTRL_IP_LEARNING": "dhcp", "DHCPSERVER": "10.128.4.1"}
    assert parse(make_spec(network="vdi-t4")).find("./devices/interface/filterref") is None


def test_a_command_socket_is_the_second_serial_port():
    serials = parse(make_spec(command_socket="/var/lib/libvirt/qemu/d.cmd")).findall(
        "./devices/serial")

    unix = [s for s in serials if s.get("type") == "unix"]
    assert len(unix) == 1
    assert unix[0].find("source").attrib == {"mode": "bind", "path": "/var/lib/libvirt/qemu/d.cmd"}
    assert unix[0].find("target").get("port") == "1"
    assert not [s for s in parse(make_spec()).findall("./devices/serial") if s.get("type") == "unix"]
