"""The libvirt implementation of the driver interface: the only module that imports libvirt."""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Any, Callable

import libvirt
from django.conf import settings

from .base import (
    CertificateError,
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
    TransientDriverError,
    Unsupported,
)
from .tls_probe import tls_refusal

logger = logging.getLogger(__name__)

# libvirt prints every error to stderr unless a handler is installed; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_TRANSIENT_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_OPERATION_ABORTED,
}
_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
_UNSUPPORTED_CODES = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}

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

# Keepalive: a host that misses this many probes this many seconds apart is closed, which
# drops its cached connection; the next call reconnects.
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3

# One connection per URI per process, shared by the worker's threads (libvirt is thread-safe).
_connections: dict[str, libvirt.virConnect] = {}
# Event callbacks per URI, told when the URI's connection closes.
_subscribers: dict[str, set[Callable[[DomainEvent], None]]] = {}
# Each URI opens under its own lock, so a host that hangs while connecting stalls only its own
# callers; the shared lock guards the dictionaries and is never held across a libvirt call.
_open_locks: dict[str, threading.Lock] = {}
_connections_lock = threading.Lock()
# Calls run here so a hung host costs a timeout, not a stuck worker.
_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="libvirt")


_event_loop_lock = threading.Lock()
_event_loop_running = False


def _ensure_event_loop() -> None:
    """Run libvirt's event loop on a thread of its own: keepalive, close callbacks and domain
    events only work while it runs. It must be registered before the first connection."""
    global _event_loop_running
    with _event_loop_lock:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_running = True


def _on_close(conn: libvirt.virConnect, reason: int, uri: str) -> None:
    """The host went away (keepalive timeout, daemon restart): forget the connection so the
    next call opens a new one, and tell subscribers their events stopped. Runs on the event
    thread, so it must not call back into libvirt on this connection."""
    with _connections_lock:
        cached = _connections.get(uri)
        if cached is conn or (cached is not None and not cached.isAlive()):
            _connections.pop(uri, None)
        callbacks = list(_subscribers.pop(uri, ()))
    logger.warning("connection to %s closed (reason %s)", uri, reason)
    for callback in callbacks:
        callback(DomainEvent(kind=EventKind.CLOSED, detail=f"connection closed ({reason})"))


def _classify(error: libvirt.libvirtError) -> DriverError:
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code in _NOT_FOUND_CODES:
        return NotFound(message)
    if code in _UNSUPPORTED_CODES:
        return Unsupported(f"not supported by this host: {message}")
    if error.get_error_domain() == libvirt.VIR_FROM_RPC and "certificate" in message.lower():
        # libvirt's TLS refused the host's certificate or cannot use the worker's own: no
        # retry changes a certificate.
        return CertificateError(message)
    if code in _TRANSIENT_CODES or error.get_error_domain() in (
        libvirt.VIR_FROM_RPC,
        libvirt.VIR_FROM_REMOTE,
    ):
        return TransientDriverError(message)
    return PermanentDriverError(message)


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


def drop_connection(uri: str) -> None:
    with _connections_lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


class LibvirtDriver:
    def __init__(self, uri: str, timeout_s: float | None = None):
        self.uri = uri
        self.timeout_s = timeout_s or settings.VDI["LIBVIRT_CALL_TIMEOUT_S"]

    # --- plumbing ---------------------------------------------------------------------------
    def _connection(self) -> libvirt.virConnect:
        with _connections_lock:
            open_lock = _open_locks.setdefault(self.uri, threading.Lock())
        with open_lock:
            with _connections_lock:
                conn = _connections.get(self.uri)
            if conn is not None and conn.isAlive():
                return conn
            _ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as error:
                classified = _classify(error)
                reason = tls_refusal(self.uri) if isinstance(classified, CertificateError) else ""
                if reason:
                    classified = CertificateError(f"{classified}: {reason}")
                raise classified from error
            self._watch_connection(conn)
            with _connections_lock:
                _connections[self.uri] = conn
            return conn

    def _watch_connection(self, conn: libvirt.virConnect) -> None:
        # The in-process test driver has no wire to keep alive and never closes on its own.
        if conn.getType() == "TEST":
            return
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        conn.registerCloseCallback(_on_close, self.uri)

    def _call(self, fn: Callable[[libvirt.virConnect], Any]) -> Any:
        def run():
            return fn(self._connection())

        future = _executor.submit(run)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            drop_connection(self.uri)
            raise TransientDriverError(
                f"{self.uri} did not answer within {self.timeout_s:g} s"
            ) from None
        except libvirt.libvirtError as error:
            classified = _classify(error)
            if classified.transient:
                drop_connection(self.uri)
            raise classified from error

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

    # --- networks and traffic filters ----------------------------------------------------
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
