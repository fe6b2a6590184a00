"""The hypervisor driver interface. Services talk to hosts only through this."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Protocol


class DriverError(Exception):
    """A hypervisor call failed. ``transient`` errors are worth retrying."""

    transient = False


class TransientDriverError(DriverError):
    transient = True


class PermanentDriverError(DriverError):
    transient = False


class NotFound(PermanentDriverError):
    pass


class CertificateError(PermanentDriverError):
    """TLS refused a certificate: the host's is not trusted, has expired or names another
    host, or the worker's own is missing or invalid. Retrying cannot fix a certificate."""


class Unsupported(PermanentDriverError):
    """The host's driver does not implement this call."""


class ConsoleTicketUnsupported(Unsupported):
    """The host cannot set console passwords (libvirt's test driver)."""


class PowerState(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CRASHED = "crashed"
    MISSING = "missing"
    OTHER = "other"


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    cpus: int
    memory_mb: int
    hypervisor: str
    simulated: bool
    virt_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class StorageInfo:
    active: bool
    capacity_gb: float
    free_gb: float
    volumes: tuple[str, ...]


class EventKind(str, enum.Enum):
    LIFECYCLE = "lifecycle"
    GRAPHICS = "graphics"
    CLOSED = "closed"


@dataclass(frozen=True)
class DomainEvent:
    """Something a host reported on its own: a domain's power state changed, a console
    client connected or left, or the connection to the host closed (``domain`` empty)."""

    kind: EventKind
    domain: str = ""
    power_state: PowerState | None = None
    detail: str = ""
    client_address: str = ""


@dataclass(frozen=True)
class ConsolePorts:
    spice_port: int | None
    spice_tls_port: int | None
    vnc_port: int | None


class Subscription(Protocol):
    def cancel(self) -> None: ...


class HypervisorDriver(Protocol):
    def host_info(self) -> HostInfo: ...

    def storage_info(self, pool: str) -> StorageInfo: ...

    def volume_exists(self, pool: str, name: str) -> bool: ...

    def create_volume(self, pool: str, name: str, capacity_gb: int) -> str: ...

    def create_overlay(self, pool: str, name: str, base: str, capacity_gb: int) -> str: ...

    def delete_volume(self, pool: str, name: str) -> None: ...

    def network_ensure(self, name: str, xml: str) -> None:
        """Network ``name`` exists (defined from ``xml`` if not), is active and autostarts."""

    def list_networks(self) -> dict[str, bool]:
        """Every network on the host: whether it is active."""

    def network_remove(self, name: str) -> None:
        """Network ``name`` is gone (stopped and undefined); already gone is fine."""

    def filter_ensure(self, name: str, xml: str) -> None:
        """Traffic filter ``name`` exists (defined from ``xml`` if not)."""

    def interface_filter_set(self, name: str, traffic_filter: str,
                             params: dict[str, str]) -> None:
        """Domain ``name``'s network interface carries ``traffic_filter`` from now on: in its
        definition, and on the running guest without a restart."""

    def define(self, xml: str) -> None: ...

    def start(self, name: str) -> None: ...

    def shutdown(self, name: str) -> None: ...

    def destroy(self, name: str) -> None: ...

    def reboot(self, name: str) -> None: ...

    def undefine(self, name: str) -> None: ...

    def power_state(self, name: str) -> PowerState: ...

    def console_ports(self, name: str) -> ConsolePorts: ...

    def set_console_password(
        self, name: str, protocol: str, password: str, valid_until: datetime,
        disconnect: bool = False,
    ) -> None: ...

    def list_domains(self) -> dict[str, PowerState]: ...

    def subscribe(self, callback: Callable[[DomainEvent], None]) -> Subscription:
        """Call ``callback`` (on the driver's event thread: keep it quick) for every event."""
