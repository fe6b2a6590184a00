"""What each operation kind does on the host: run in workers, the only code that drives
hosts (through the driver)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction

from hypervisors.domain_xml import DomainSpec, build_domain_xml
from hypervisors.drivers import (
    DriverError,
    NotFound,
    PowerState,
    TransientDriverError,
    Unsupported,
    driver_for,
)
from hypervisors.networks import (
    Attachment,
    NetworkUnavailable,
    tenant_attachment,
    tenant_network_ensure,
    tenant_network_release,
)
from hypervisors.services import host_place
from tenants.scoping import scopes_disabled

from ..choices import (
    DESKTOP_MACHINE,
    DesktopState,
    ImageBoot,
    OperationKind,
)
from .. import events
from ..models import Desktop, Operation
from .operations import _boot_slot_take, pool_autoscale_enqueue

logger = logging.getLogger(__name__)


# --- executors: run in workers, the only code that drives hosts -----------------------------
def _domain_spec(desktop: Desktop, disk_path: str, attachment: Attachment) -> DomainSpec:
    host, image = desktop.host, desktop.image
    kernel_boot = image.boot == ImageBoot.KERNEL
    return DomainSpec(
        name=desktop.name,
        uuid=str(desktop.id),
        virt_type=host.virt_type,
        vcpus=desktop.vcpus,
        memory_mb=desktop.memory_mb,
        disk_path=disk_path,
        console_address=host.console_address,
        spice_tls=bool(host.console_ca_cert),
        vnc_address=host.vnc_listen_address,
        network=attachment.network,
        traffic_filter=attachment.traffic_filter,
        traffic_filter_params=attachment.traffic_filter_params,
        kernel=image.kernel if kernel_boot else "",
        initrd=image.initrd if kernel_boot else "",
        cmdline=image.cmdline if kernel_boot else "",
        # Lab images print to a serial console: keep it where libvirt keeps guest logs.
        serial_log=f"/var/log/libvirt/qemu/{desktop.name}-serial.log" if kernel_boot else "",
        # ... and take the lab's tests' commands on a second one.
        command_socket=f"/var/lib/libvirt/qemu/{desktop.name}.cmd" if kernel_boot else "",
        title=desktop.domain_title,
        metadata={"tenant": desktop.tenant.slug, "pool": str(desktop.pool_id)},
    )


def _volume_name(desktop: Desktop) -> str:
    return f"{desktop.name}.qcow2"


def _build_disk_and_domain(desktop: Desktop, attachment: Attachment | None = None) -> None:
    """The desktop's disk and domain on its host, on its tenant's network there
    (``attachment``, when placement has just made sure of it)."""
    host, image = desktop.host, desktop.image
    driver = driver_for(host)
    if not driver.volume_exists(host.storage_pool, image.base_volume):
        if not host.is_simulated:
            raise DriverError(
                f"image base volume {image.base_volume!r} is missing from storage pool "
                f"{host.storage_pool!r} on {host.name}"
            )
        # A simulated host has no real disks: give it an empty base so clones can be made.
        try:
            driver.create_volume(host.storage_pool, image.base_volume, image.disk_gb)
        except DriverError:
            if not driver.volume_exists(host.storage_pool, image.base_volume):
                raise  # not a concurrent provisioning that created it first
    if attachment is None:
        attachment = tenant_network_ensure(host=host, tenant=desktop.tenant)
    volume = _volume_name(desktop)
    driver.delete_volume(host.storage_pool, volume)  # a half-made clone from an earlier try
    path = driver.create_overlay(host.storage_pool, volume, image.base_volume, image.disk_gb)
    try:
        driver.define(build_domain_xml(_domain_spec(desktop, path, attachment)))
    except DriverError:
        driver.delete_volume(host.storage_pool, volume)  # no orphaned clone left behind
        raise
    Desktop.objects.filter(pk=desktop.pk).update(volume_name=volume)
    desktop.volume_name = volume


def _provision(desktop: Desktop, operation: Operation) -> None:
    # A retry (a transient error, a wait for a boot slot, a worker that died) resumes where
    # the last attempt stopped: once the domain is defined, only the start is left.
    if desktop.state in (DesktopState.PENDING, DesktopState.PROVISIONING):
        DESKTOP_MACHINE.enter(desktop, DesktopState.PROVISIONING)
        attachment = _place(desktop, operation) if desktop.host_id is None else None
        _build_disk_and_domain(desktop, attachment)
        DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPED)
    if operation.params.get("start") and desktop.state != DesktopState.RUNNING:
        _start(desktop, operation)


def _place(desktop: Desktop, operation: Operation) -> Attachment:
    """Put the desktop on a host with room that can give its tenant a network of its own.
    A host that cannot is skipped for this desktop, and the reason kept on the operation
    (``params["placement_skipped"]``, by host id): never a desktop on a shared network."""
    skipped = dict(operation.params.get("placement_skipped", {}))
    while True:
        with transaction.atomic():
            host = host_place(vcpus=desktop.vcpus, memory_mb=desktop.memory_mb,
                              base_volume=desktop.image.base_volume, exclude=skipped)
            if host is None:
                reasons = "".join(f"; skipped {entry['host']}: {entry['reason']}"
                                  for entry in skipped.values())
                raise TransientDriverError(
                    "no enabled, up host has room for this desktop and the image's base "
                    f"volume {desktop.image.base_volume!r}{reasons}"
                )
            Desktop.objects.filter(pk=desktop.pk).update(host=host)
            desktop.host = host
        try:
            return tenant_network_ensure(host=host, tenant=desktop.tenant)
        except NetworkUnavailable as error:
            logger.warning("desktop %s: %s skipped: %s", desktop.name, host.name, error)
            skipped[str(host.pk)] = {"host": host.name, "reason": str(error)}
            operation.params = {**operation.params, "placement_skipped": skipped}
            Operation.objects.filter(pk=operation.pk).update(params=operation.params)
            Desktop.objects.filter(pk=desktop.pk).update(host=None)
            desktop.host = None


def desktops_traffic_filter_apply(*, tenant) -> int:
    """Put the filter the tenant's settings call for (its desktops kept in their network, or
    let out) on every desktop of the tenant that has a domain, running ones included; how
    many changed. A desktop defined meanwhile gets it from its definition."""
    changed = 0
    attachments: dict = {}
    with scopes_disabled():
        desktops = list(Desktop.objects.filter(tenant=tenant, host__isnull=False)
                        .exclude(state__in=(DesktopState.PENDING, DesktopState.DELETING))
                        .select_related("host"))
    for desktop in desktops:
        host = desktop.host
        if host.pk not in attachments:
            attachments[host.pk] = tenant_attachment(host=host, tenant=tenant)
        attachment = attachments[host.pk]
        if not attachment.traffic_filter:
            continue
        try:
            driver_for(host).interface_filter_set(
                desktop.name, attachment.traffic_filter, attachment.traffic_filter_params)
        except (NotFound, Unsupported):
            continue  # not defined yet (its definition will say), or a simulated host
        except DriverError as error:
            logger.warning("desktop %s keeps its old traffic filter: %s", desktop.name, error)
            continue
        changed += 1
    logger.info("tenant %s: traffic filter %s on %d desktop(s)", tenant.slug,
                "for egress" if tenant.desktop_egress else "keeping them in", changed)
    return changed


def _refresh_ports(desktop: Desktop) -> None:
    ports = driver_for(desktop.host).console_ports(desktop.name)
    Desktop.objects.filter(pk=desktop.pk).update(
        spice_port=ports.spice_port, spice_tls_port=ports.spice_tls_port, vnc_port=ports.vnc_port
    )


def _start(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.STARTING)
    _boot_slot_take(desktop, operation)
    driver_for(desktop.host).start(desktop.name)
    _refresh_ports(desktop)
    DESKTOP_MACHINE.apply(desktop, DesktopState.RUNNING, last_error="")
    events.desktop_running.send(sender=Desktop, desktop=desktop)


def _wait_stopped(desktop: Desktop, timeout_s: float) -> bool:
    driver = driver_for(desktop.host)
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if driver.power_state(desktop.name) in (PowerState.STOPPED, PowerState.MISSING):
            return True
        time.sleep(1)
    return False


def _stopped(desktop: Desktop) -> None:
    Desktop.objects.filter(pk=desktop.pk).update(spice_port=None, spice_tls_port=None,
                                                 vnc_port=None)
    DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPED)


def _shutdown(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.STOPPING)
    driver = driver_for(desktop.host)
    driver.shutdown(desktop.name)
    if not _wait_stopped(desktop, operation.params.get("grace_s", settings.VDI["SHUTDOWN_GRACE_S"])):
        logger.info("desktop %s ignored shutdown; powering off", desktop.name)
        driver.destroy(desktop.name)
    _stopped(desktop)


def _poweroff(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.STOPPING)
    driver_for(desktop.host).destroy(desktop.name)
    _stopped(desktop)


def _reboot(desktop: Desktop, operation: Operation) -> None:
    driver_for(desktop.host).reboot(desktop.name)


def _reset(desktop: Desktop, operation: Operation) -> None:
    """Back to the image: a fresh overlay under the same identity (name, uuid, owner)."""
    if desktop.state == DesktopState.STARTING:  # a retry: the new disk is made, start it
        _start(desktop, operation)
        return
    DESKTOP_MACHINE.enter(desktop, DesktopState.RECYCLING)
    driver_for(desktop.host).destroy(desktop.name)
    if desktop.image_id != desktop.pool.image_id:  # a new image version was published
        desktop.image = desktop.pool.image
        Desktop.objects.filter(pk=desktop.pk).update(image=desktop.image)
    _build_disk_and_domain(desktop)
    Desktop.objects.filter(pk=desktop.pk).update(needs_reset=False)  # a fresh disk
    desktop.needs_reset = False
    DESKTOP_MACHINE.apply(desktop, DesktopState.STOPPED)
    if operation.params.get("start"):
        _start(desktop, operation)


def _delete(desktop: Desktop, operation: Operation) -> None:
    DESKTOP_MACHINE.enter(desktop, DesktopState.DELETING)
    if desktop.host_id:
        driver = driver_for(desktop.host)
        driver.destroy(desktop.name)
        driver.undefine(desktop.name)
        if desktop.volume_name:
            driver.delete_volume(desktop.host.storage_pool, desktop.volume_name)
    desktop.delete()
    if desktop.host_id:
        host, tenant = desktop.host, desktop.tenant
        with scopes_disabled():
            tenant_network_release(host=host, tenant=tenant, in_use=Desktop.objects.filter(
                host=host, tenant=tenant).exists)
    if desktop.pool.is_deleting:
        pool_autoscale_enqueue(desktop.pool)  # the next step of the pool's deletion


_EXECUTORS = {
    OperationKind.PROVISION: _provision,
    OperationKind.START: _start,
    OperationKind.SHUTDOWN: _shutdown,
    OperationKind.POWEROFF: _poweroff,
    OperationKind.REBOOT: _reboot,
    OperationKind.RESET: _reset,
    OperationKind.DELETE: _delete,
}

