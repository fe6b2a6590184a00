"""The libvirt implementation of the driver interface. Only it and the modules it is made of
(libvirt_connections.py: connections and calls; libvirt_network.py: networks and traffic
filters) import libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Callable

import libvirt

from .base import (
    ConsolePorts,
    ConsoleTicketUnsupported,
    DomainEvent,
    DriverError,
    EventKind,
    HostInfo,
    NotFound,
    PermanentDriverError,
    PowerState,
    StorageInfo,
    Unsupported,
)
from .libvirt_connections import LibvirtConnection, _connections_lock, _subscribers
from .libvirt_network import LibvirtNetworks

_POWER_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
}

# What a lifecycle event says about the domain's power state.
_EVENT_POWER_STATES = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: PowerState.RUNNING,  # the guest is shutting down
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: PowerState.MISSING,
}
_STOPPED_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
}
_GRAPHICS_PHASES = {
    libvirt.VIR_DOMAIN_EVENT_GRAPHICS_CONNECT: "connect",
    libvirt.VIR_DOMAIN_EVENT_GRAPHICS_INITIALIZE: "initialize",
    libvirt.VIR_DOMAIN_EVENT_GRAPHICS_DISCONNECT: "disconnect",
}


def _find_volume(storage: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return storage.storageVolLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


def _volume_xml(name: str, capacity_gb: int, backing_path: str = "") -> str:
    """A qcow2 volume; with ``backing_path``, a linked clone of that volume."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="G").text = str(capacity_gb)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type="qcow2")
    ET.SubElement(target, "compat").text = "1.1"
    if backing_path:
        backing = ET.SubElement(volume, "backingStore")
        ET.SubElement(backing, "path").text = backing_path
        ET.SubElement(backing, "format", type="qcow2")
    return ET.tostring(volume, encoding="unicode")


class LibvirtDriver(LibvirtNetworks, LibvirtConnection):
    # --- host -------------------------------------------------------------------------------
    def host_info(self) -> HostInfo:
        def probe(conn):
            _model, memory_mb, cpus, *_ = conn.getInfo()
            capabilities = ET.fromstring(conn.getCapabilities())
            virt_types = {
                domain.get("type")
                for domain in capabilities.findall("./guest/arch[@name='x86_64']/domain")
            }
            return HostInfo(
                hostname=conn.getHostname(),
                cpus=cpus,
                memory_mb=memory_mb,
                hypervisor=conn.getType(),
                simulated=conn.getType() == "TEST",
                virt_types=tuple(sorted(virt_types - {None})),
            )

        return self._call(probe)

    def storage_info(self, pool: str) -> StorageInfo:
        def inspect(conn):
            storage = conn.storagePoolLookupByName(pool)
            active = bool(storage.isActive())
            if active:
                storage.refresh(0)  # volumes copied in by hand since the last look
            _state, capacity, _allocation, available = storage.info()
            return StorageInfo(
                active=active,
                capacity_gb=round(capacity / 2**30, 1),
                free_gb=round(available / 2**30, 1),
                volumes=tuple(sorted(storage.listVolumes())) if active else (),
            )

        return self._call(inspect)

    # --- storage ----------------------------------------------------------------------------
    def volume_exists(self, pool: str, name: str) -> bool:
        return self._call(
            lambda c: _find_volume(c.storagePoolLookupByName(pool), name) is not None
        )

    def create_volume(self, pool: str, name: str, capacity_gb: int) -> str:
        xml = _volume_xml(name, capacity_gb)
        return self._call(lambda c: c.storagePoolLookupByName(pool).createXML(xml, 0).path())

    def create_overlay(self, pool: str, name: str, base: str, capacity_gb: int) -> str:
        def create(conn):
            storage = conn.storagePoolLookupByName(pool)
            base_path = storage.storageVolLookupByName(base).path()
            return storage.createXML(_volume_xml(name, capacity_gb, base_path), 0).path()

        return self._call(create)

    def delete_volume(self, pool: str, name: str) -> None:
        def delete(conn):
            # Only the volume may be missing (already deleted); a missing pool is an error.
            volume = _find_volume(conn.storagePoolLookupByName(pool), name)
            if volume is not None:
                volume.delete(0)

        self._call(delete)

    # --- domains ----------------------------------------------------------------------------
    def define(self, xml: str) -> None:
        self._call(lambda c: c.defineXML(xml))

    def _on_domain(self, name: str, action: Callable[[libvirt.virDomain], Any]) -> Any:
        return self._call(lambda c: action(c.lookupByName(name)))

    def start(self, name: str) -> None:
        def start(dom):
            if not dom.isActive():
                dom.create()

        self._on_domain(name, start)

    def shutdown(self, name: str) -> None:
        self._on_domain(name, lambda d: d.shutdown() if d.isActive() else None)

    def destroy(self, name: str) -> None:
        try:
            self._on_domain(name, lambda d: d.destroy() if d.isActive() else None)
        except NotFound:
            pass

    def reboot(self, name: str) -> None:
        self._on_domain(name, lambda d: d.reboot(0))

    def undefine(self, name: str) -> None:
        try:
            self._on_domain(name, lambda d: d.undefine())
        except NotFound:
            pass

    def power_state(self, name: str) -> PowerState:
        try:
            state, _reason = self._on_domain(name, lambda d: d.state())
        except NotFound:
            return PowerState.MISSING
        return _POWER_STATES.get(state, PowerState.OTHER)

    def list_domains(self) -> dict[str, PowerState]:
        def listing(conn):
            return {
                dom.name(): _POWER_STATES.get(dom.state()[0], PowerState.OTHER)
                for dom in conn.listAllDomains(0)
            }

        return self._call(listing)

    # --- events -----------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[DomainEvent], None]) -> "_Subscription":
        """Deliver lifecycle and graphics events of every domain on this host to ``callback``,
        and one CLOSED event if the connection drops (then subscribe again)."""

        def lifecycle(_conn, dom, event, detail, _opaque):
            if event not in _EVENT_POWER_STATES:
                return  # defined, undefined-only changes and the like carry no power state
            callback(DomainEvent(
                kind=EventKind.LIFECYCLE, domain=dom.name(),
                power_state=_EVENT_POWER_STATES[event],
                detail=_STOPPED_DETAILS.get(detail, "") if event == libvirt.VIR_DOMAIN_EVENT_STOPPED
                else "",
            ))

        def graphics(_conn, dom, phase, _local, remote, _scheme, _subject, _opaque):
            callback(DomainEvent(
                kind=EventKind.GRAPHICS, domain=dom.name(),
                detail=_GRAPHICS_PHASES.get(phase, str(phase)),
                client_address=(remote or {}).get("node", ""),
            ))

        def register(conn):
            ids = [conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)]
            try:
                ids.append(conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_GRAPHICS, graphics, None))
            except libvirt.libvirtError:
                pass  # the test driver has no graphics events
            return conn, ids

        conn, ids = self._call(register)
        with _connections_lock:
            _subscribers.setdefault(self.uri, set()).add(callback)
        return _Subscription(self, conn, ids, callback)

    # --- consoles ---------------------------------------------------------------------------
    def console_ports(self, name: str) -> ConsolePorts:
        root = ET.fromstring(self._on_domain(name, lambda d: d.XMLDesc(0)))

        def port(kind: str, attribute: str) -> int | None:
            element = root.find(f"./devices/graphics[@type='{kind}']")
            if element is None:
                return None
            value = int(element.get(attribute, "-1"))
            return value if value > 0 else None

        return ConsolePorts(
            spice_port=port("spice", "port"),
            spice_tls_port=port("spice", "tlsPort"),
            vnc_port=port("vnc", "port"),
        )

    def set_console_password(
        self, name: str, protocol: str, password: str, valid_until: datetime,
        disconnect: bool = False,
    ) -> None:
        """Set the display password on the live domain, valid until ``valid_until`` (UTC).

        Clients already connected stay, unless ``disconnect`` (SPICE only: QEMU accepts
        nothing but ``keep`` for VNC)."""

        def update(dom):
            root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
            graphics = root.find(f"./devices/graphics[@type='{protocol}']")
            if graphics is None:
                raise PermanentDriverError(f"{name} has no {protocol} display")
            graphics.set("passwd", password)
            graphics.set(
                "passwdValidTo",
                valid_until.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            )
            graphics.set("connected", "disconnect" if disconnect and protocol == "spice"
                         else "keep")
            if protocol == "spice":
                graphics.set("autoport", "yes")
            dom.updateDeviceFlags(
                ET.tostring(graphics, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE
            )

        try:
            self._on_domain(name, update)
        except Unsupported as error:
            raise ConsoleTicketUnsupported(
                f"this host cannot set console passwords ({error})"
            ) from error


class _Subscription:
    def __init__(self, driver: LibvirtDriver, conn, ids: list[int], callback):
        self._driver, self._conn, self._ids, self._callback = driver, conn, ids, callback

    def cancel(self) -> None:
        with _connections_lock:
            _subscribers.get(self._driver.uri, set()).discard(self._callback)

        def deregister(_conn):
            for callback_id in self._ids:
                try:
                    self._conn.domainEventDeregisterAny(callback_id)
                except libvirt.libvirtError:
                    pass  # the connection is already gone

        try:
            self._driver._call(deregister)
        except DriverError:
            pass
