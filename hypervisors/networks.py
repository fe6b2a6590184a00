"""Tenant networks: one per tenant on every host its desktops run on, made with the first
desktop there and removed with the last (docs/hosts.md, "Tenant networks").

Workers call these while they provision and delete desktops (platform code: the rows are
tenant-owned and fail closed, so these look across tenants with ``scopes_disabled``). A host
that cannot give a tenant its network is skipped for that tenant (``NetworkUnavailable``): a
desktop never joins another tenant's network, nor a shared one.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from tenants.scoping import scopes_disabled

from .choices import NetworkMode
from .drivers import DriverError, PermanentDriverError, Unsupported, driver_for
from .models import Host, HostNetwork, TenantSegment
from .network_xml import NetworkSpec, all_filters, build_network_xml, interface_filter

logger = logging.getLogger(__name__)


class NetworkUnavailable(PermanentDriverError):
    """This host cannot give this tenant a network of its own; placement skips it."""


@dataclass(frozen=True)
class Attachment:
    """What a desktop's interface needs: the network it joins and its traffic filter."""

    network: str = ""
    traffic_filter: str = ""
    traffic_filter_params: dict[str, str] = field(default_factory=dict)


NO_NETWORK = Attachment()


def traffic_filter_ensure(host: Host) -> str:
    """Define the desktops' traffic filters on ``host`` where they are missing; the reason
    they cannot be, or ''. A simulated host (libvirt's test driver) carries no traffic and
    has no filters, so it has nothing to define."""
    if host.network_mode == NetworkMode.NONE:
        return ""
    driver = driver_for(host)
    for name, xml in all_filters():
        try:
            driver.filter_ensure(name, xml)
        except Unsupported:
            if host.is_simulated:
                return ""
            return "this host cannot apply traffic filters (libvirt's nwfilter driver is missing)"
        except DriverError as error:
            return f"traffic filter {name} could not be defined: {error}"
    return ""


@scopes_disabled()
def tenant_segment(tenant) -> TenantSegment:
    """The tenant's number on the wire, given once (the lowest unused would do as well; the
    next one keeps a deleted tenant's subnet and VLAN out of use a while longer)."""
    for _attempt in range(5):
        segment = TenantSegment.objects.filter(tenant=tenant).first()
        if segment is not None:
            return segment
        highest = TenantSegment.objects.aggregate(highest=Max("number"))["highest"]
        try:
            with transaction.atomic():
                return TenantSegment.objects.create(
                    tenant=tenant, number=0 if highest is None else highest + 1)
        except IntegrityError:
            continue  # another worker gave this tenant, or this number, first
    raise DriverError("could not give the tenant a network segment; try again")


def _network_spec(host: Host, segment: TenantSegment) -> NetworkSpec:
    name = f"{settings.VDI['TENANT_NETWORK_NAME']}{segment.number}"
    if host.network_mode == NetworkMode.VLAN:
        tags = host.vlan_tags
        if tags is None or segment.number >= len(tags):
            raise NetworkUnavailable(
                f"host {host.name} has no VLAN tag for this tenant (range "
                f"{host.vlan_range or 'unset'}, tenant segment {segment.number})")
        return NetworkSpec(name=name, kind="vlan", bridge=host.bridge,
                           vlan=tags[segment.number])
    addresses = ipaddress.ip_network(settings.VDI["TENANT_NETWORK_RANGE"])
    prefix = settings.VDI["TENANT_NETWORK_PREFIX"]
    subnets = 2 ** (prefix - addresses.prefixlen)
    if segment.number >= subnets:
        raise NetworkUnavailable(
            f"VDI_TENANT_NETWORK_RANGE {addresses} has no /{prefix} left for this tenant "
            f"(tenant segment {segment.number} of {subnets})")
    subnet = ipaddress.ip_network(
        (int(addresses.network_address) + segment.number * 2 ** (32 - prefix), prefix))
    return NetworkSpec(name=name, kind="isolated", bridge=name, subnet=str(subnet),
                       nat=host.egress)


def _spec_of(row: HostNetwork) -> NetworkSpec:
    """The network a row records (its kind: isolated, nat or vlan)."""
    if row.kind == "vlan":
        return NetworkSpec(name=row.name, kind="vlan", bridge=row.host.bridge, vlan=row.vlan)
    return NetworkSpec(name=row.name, kind="isolated", bridge=row.name, subnet=row.subnet,
                       nat=row.kind == "nat")


def _attachment(spec: NetworkSpec, tenant) -> Attachment:
    traffic_filter, params = interface_filter(spec, egress=tenant.desktop_egress)
    return Attachment(network=spec.name, traffic_filter=traffic_filter,
                      traffic_filter_params=params)


def tenant_attachment(*, host: Host, tenant) -> Attachment:
    """What the tenant's desktops on ``host`` should carry now (after its settings changed),
    from the network it has there; ``NO_NETWORK`` if it has none."""
    with scopes_disabled():
        row = HostNetwork.objects.filter(host=host, tenant=tenant).select_related("host").first()
    return NO_NETWORK if row is None else _attachment(_spec_of(row), tenant)


@scopes_disabled()
def tenant_network_ensure(*, host: Host, tenant) -> Attachment:
    """The tenant's network on ``host``, made now if it has none. Raises
    ``NetworkUnavailable`` (with the reason) when this host cannot give it one.

    The row is locked while the network is made, and ``tenant_network_release`` takes the
    same lock: a desktop placed on the host before its network is made keeps the network
    from being removed under it."""
    if host.network_mode == NetworkMode.NONE:
        return NO_NETWORK
    segment = tenant_segment(tenant)
    spec = _network_spec(host, segment)
    with transaction.atomic():
        network, created = HostNetwork.objects.select_for_update().get_or_create(
            host=host, tenant=tenant,
            defaults={"name": spec.name, "kind": "nat" if spec.nat else spec.kind,
                      "subnet": spec.subnet, "vlan": spec.vlan},
        )
        if not created:
            return _attachment(_spec_of(network), tenant)
        try:
            driver_for(host).network_ensure(spec.name, build_network_xml(spec))
        except DriverError as error:
            if error.transient:
                raise
            raise NetworkUnavailable(
                f"host {host.name} could not make the tenant's network {spec.name}: {error}"
            ) from error
    logger.info("network %s made on %s for tenant %s", spec.name, host.name, tenant.slug)
    return _attachment(spec, tenant)


@scopes_disabled()
def tenant_networks_reconcile(host: Host) -> list[str]:
    """Make again (or start) the tenants' networks that ``host`` should have and lacks (a
    reinstalled host, a network an operator removed); the names of those it made."""
    rows = list(HostNetwork.objects.filter(host=host).select_related("host"))
    if not rows:
        return []
    driver = driver_for(host)
    present = driver.list_networks()
    remade = []
    for row in rows:
        if present.get(row.name):
            continue
        driver.network_ensure(row.name, build_network_xml(_spec_of(row)))
        remade.append(row.name)
    if remade:
        logger.warning("host %s lacked tenant networks %s: made again", host.name,
                       ", ".join(remade))
    return remade


@scopes_disabled()
def tenant_network_release(*, host: Host, tenant, in_use: Callable[[], bool]) -> bool:
    """Remove the tenant's network from ``host`` unless ``in_use()`` (asked under the
    network's lock) says a desktop of the tenant is still placed there. True if removed."""
    with transaction.atomic():
        network = HostNetwork.objects.select_for_update().filter(
            host=host, tenant=tenant).first()
        if network is None or in_use():
            return False
        driver_for(host).network_remove(network.name)
        network.delete()
    logger.info("network %s removed from %s: tenant %s has no desktop left there",
                network.name, host.name, tenant.slug)
    return True
