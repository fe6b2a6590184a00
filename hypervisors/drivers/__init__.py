"""Hypervisor drivers. ``driver_for(host)`` is the only way to reach a host."""

from .base import (
    CertificateError,
    ConsolePorts,
    ConsoleTicketUnsupported,
    DomainEvent,
    DriverError,
    EventKind,
    HostInfo,
    HypervisorDriver,
    NotFound,
    PermanentDriverError,
    PowerState,
    StorageInfo,
    Subscription,
    TransientDriverError,
    Unsupported,
)


def driver_for(host) -> HypervisorDriver:
    from .libvirt_driver import LibvirtDriver

    return LibvirtDriver(host.uri)


__all__ = [
    "CertificateError",
    "ConsolePorts",
    "ConsoleTicketUnsupported",
    "DomainEvent",
    "DriverError",
    "EventKind",
    "HostInfo",
    "HypervisorDriver",
    "NotFound",
    "PermanentDriverError",
    "PowerState",
    "StorageInfo",
    "Subscription",
    "TransientDriverError",
    "Unsupported",
    "driver_for",
]
