import ipaddress
import uuid
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from tenants.models import TenantOwnedModel

from .choices import HostState, NetworkMode, VirtType


# libvirt's test driver (test:///default and friends): the one rule for a simulated host.
SIMULATED_URI_PREFIX = "test"

class Host(models.Model):
    """A KVM hypervisor. Platform-owned: shared by every tenant, managed by staff."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField(
        max_length=255, help_text="libvirt URI, e.g. qemu+tls://kvm1.example.com/system"
    )
    virt_type = models.CharField(max_length=8, choices=VirtType.choices, default=VirtType.KVM)
    console_address = models.CharField(
        max_length=255, help_text="Address console clients dial to reach this host's guests."
    )
    vnc_listen_address = models.CharField(
        max_length=255, default="127.0.0.1",
        help_text="The address the console proxies reach this host's VNC displays on; keep "
                  "it off any network clients reach (browsers get VNC through the proxies "
                  "only). 127.0.0.1 suits a proxy on the host itself.",
    )
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=HostState.choices, default=HostState.NEW)
    cpus = models.PositiveIntegerField(default=0, help_text="Discovered physical CPUs.")
    memory_mb = models.PositiveIntegerField(default=0, help_text="Discovered memory.")
    cpu_overcommit = models.FloatField(default=4.0, validators=[MinValueValidator(0.1)])
    memory_overcommit = models.FloatField(default=1.0, validators=[MinValueValidator(0.1)])
    max_concurrent_boots = models.PositiveIntegerField(
        default=4, validators=[MinValueValidator(1)], help_text="Storm control."
    )
    storage_pool = models.CharField(max_length=100, default="default")
    network_mode = models.CharField(
        max_length=8, choices=NetworkMode.choices, default=NetworkMode.TENANT,
        help_text="How desktops of different tenants are kept apart on the wire: every "
                  "tenant gets a network of its own on this host (docs/hosts.md).",
    )
    bridge = models.CharField(
        max_length=100, blank=True, default="",
        help_text="VLAN mode: the Open vSwitch bridge on the host that carries the tenants' "
                  "VLANs (e.g. br-desktops).",
    )
    egress = models.BooleanField(
        default=False,
        help_text="Tenant mode: tenants' networks here NAT out through the host's own routes "
                  "(applies to networks made from now on). Only the tenants whose settings "
                  "allow it use that way out; the others' traffic filter keeps them in.",
    )
    vlan_range = models.CharField(
        max_length=16, blank=True, default="",
        help_text="VLAN mode: the tags tenants get, e.g. 100-3999 (the same on every host of "
                  "a trunk: a tenant keeps its tag everywhere).",
    )
    console_tls_subject = models.CharField(
        max_length=255, blank=True, default="",
        help_text="SPICE TLS: the subject of the host's certificate, e.g. "
                  "'C=US, O=Example, CN=kvm1.example.com' (goes into .vv files as host-subject).",
    )
    console_ca_cert = models.TextField(
        blank=True, default="",
        help_text="SPICE TLS: the CA certificate (PEM) clients verify the host with.",
    )
    # What the last probe found.
    virt_types = models.JSONField(default=list, blank=True,
                                  help_text="Virtualisation types the host offers.")
    storage_free_gb = models.FloatField(null=True, blank=True)
    volumes = models.JSONField(default=list, blank=True,
                               help_text="Volumes in the storage pool (image base volumes).")
    unknown_domains = models.JSONField(
        default=list, blank=True,
        help_text="Domains on the host the portal did not create: reported, never touched.",
    )
    failures = models.PositiveIntegerField(default=0, help_text="Failed checks in a row.")
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        uri_problem = _uri_problem(self.uri)
        if uri_problem:
            errors["uri"] = uri_problem
        if self.network_mode == NetworkMode.VLAN:
            if not self.bridge:
                errors["bridge"] = "VLAN mode needs the Open vSwitch bridge that carries the VLANs."
            if self.vlan_tags is None:
                errors["vlan_range"] = "VLAN mode needs a range of tags, e.g. 100-3999 (1-4094)."
        vnc_problem = _vnc_listen_problem(self.vnc_listen_address, self.console_address)
        if vnc_problem:
            errors["vnc_listen_address"] = vnc_problem
        if errors:
            raise ValidationError(errors)

    @property
    def accepts_new_work(self) -> bool:
        return self.enabled and self.state == HostState.UP

    @property
    def is_simulated(self) -> bool:
        """libvirt's test driver: domains exist but no guest runs and no console answers."""
        return self.uri.startswith(SIMULATED_URI_PREFIX)

    def has_volume(self, name: str) -> bool:
        """Whether the last probe saw ``name`` in the storage pool. A simulated host makes
        its (empty) base volumes on demand, so it has them all."""
        return self.is_simulated or name in self.volumes

    @property
    def vlan_tags(self) -> range | None:
        """The VLAN tags of ``vlan_range``, or None when it is not a valid range."""
        first, dash, last = self.vlan_range.partition("-")
        if not (dash and first.strip().isdigit() and last.strip().isdigit()):
            return None
        first_tag, last_tag = int(first), int(last)
        if not 1 <= first_tag <= last_tag <= 4094:
            return None
        return range(first_tag, last_tag + 1)

    @property
    def vcpu_capacity(self) -> int:
        return int(self.cpus * self.cpu_overcommit)

    @property
    def memory_capacity_mb(self) -> int:
        return int(self.memory_mb * self.memory_overcommit)


class TenantSegment(TenantOwnedModel):
    """A tenant's number on the wire, the same on every host: its isolated networks' subnet
    and its VLAN tag derive from it. Given once, on its first desktop. Read by workers and
    staff only (platform code, ``scopes_disabled``), fail-closed like every tenant row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.PositiveIntegerField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="tenantsegment_tenant_uniq"),
        ]

    def __str__(self) -> str:
        return f"segment {self.number}"


class HostNetwork(TenantOwnedModel):
    """A tenant's network on one host: made with the tenant's first desktop there, removed
    with its last one. Read by workers and staff only, like the host."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="networks")
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=8)
    subnet = models.CharField(max_length=43, blank=True, default="")
    vlan = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "tenant"], name="hostnetwork_host_tenant_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.name} on {self.host_id}"


def _vnc_listen_problem(address: str, console_address: str) -> str:
    """Why VNC displays may not listen on ``address``, or an empty string.

    QEMU keeps a VNC client connected when its password changes, so a native VNC client
    that could reach the display would outlive its session: the displays listen only where
    the console proxies dial, which cut a browser console when its session ends.
    """
    if not address or any(c.isspace() for c in address):
        return "Enter the address the console proxies reach this host's VNC displays on."
    address = address.lower()
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        return ("VNC displays may not listen on every address: console clients could reach "
                "them directly. Use an address only the console proxies reach.")
    if address == console_address.strip().lower() and not (ip and ip.is_loopback):
        return ("VNC displays may not listen on the console address clients dial: a native "
                "VNC client could stay connected after its session ends. Use an address only "
                "the console proxies reach.")
    return ""


# The host links the portal supports (docs/hosts.md), and the query parameters of each.
# Anything else (qemu+tcp:// in clear, a local socket path, ?command= running a program of
# the URI's choosing, …) is refused.
_URI_PARAMETERS = {
    "qemu": set(),  # qemu:///system: this machine's libvirtd (the lab, a one-machine install)
    "qemu+ssh": {"keyfile", "no_tty"},
    # libvirt's own SSH clients, which check the host key against a file of your choice.
    "qemu+libssh2": {"keyfile", "known_hosts", "sshauth"},
    "qemu+libssh": {"keyfile", "known_hosts", "sshauth"},
    "qemu+tls": {"pkipath"},
    # Simulated hosts (libvirt's test driver, in the worker or in a lab's libvirtd); ``host``
    # is a label libvirt ignores, which tells several simulated hosts apart.
    "test": {"host"},
    "test+unix": {"host"},
}
# Turned on only by a lab (VDI_HOST_URI_ALLOW_NO_VERIFY): its throwaway sshd's host key is
# not checked. A real host's key or certificate always is.
_LAB_ONLY_PARAMETERS = {"qemu+ssh": {"no_verify"}}


def _uri_problem(uri: str) -> str:
    """Why ``uri`` is not a libvirt URI this portal can drive, or an empty string."""
    try:
        parts = urlsplit(uri)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as error:
        return f"Not a URI: {error}."
    if "://" not in uri or any(c.isspace() for c in uri):
        return "Not a libvirt URI; expected e.g. qemu+tls://kvm1.example.com/system."
    allowed = _URI_PARAMETERS.get(parts.scheme)
    if allowed is None:
        return (f"Unsupported scheme {parts.scheme!r}; use qemu:///system, qemu+tls://…, "
                "qemu+ssh://… (or test:///default for a simulated host).")
    if parts.scheme.startswith("qemu") and parts.path not in ("/system", "/session"):
        return "A qemu URI ends in /system (or /session), e.g. qemu+ssh://root@kvm1/system."
    if parts.scheme == "qemu" and parts.netloc:
        return ("A remote host is reached with qemu+tls:// or qemu+ssh://, e.g. "
                "qemu+tls://kvm1.example.com/system.")
    if parts.scheme != "qemu" and parts.scheme.startswith("qemu") and not parts.hostname:
        return f"A {parts.scheme}:// URI names its host, e.g. {parts.scheme}://kvm1.example.com/system."
    if settings.VDI["HOST_URI_ALLOW_NO_VERIFY"]:
        allowed = allowed | _LAB_ONLY_PARAMETERS.get(parts.scheme, set())
    refused = sorted({name for name, _value in query} - allowed)
    if refused:
        supported = ", ".join(sorted(allowed)) or "none"
        return (f"Unsupported parameter(s) {', '.join(refused)} for {parts.scheme}:// "
                f"(supported: {supported}).")
    return ""
