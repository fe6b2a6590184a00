"""The platform's own settings, ``settings.VDI``: read from VDI_* variables and checked when
the settings load (config/settings.py calls ``vdi_settings``); a bad value stops the start
with the variable's name."""

import ipaddress
import os
import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int_between, env_list
from core.limits import TICKET_TTL_MAX_S, TICKET_TTL_MIN_S


def vdi_settings(*, development: bool, allowed_hosts: list[str],
                 csrf_trusted_origins: list[str]) -> dict[str, Any]:
    """settings.VDI, each part read and checked in turn."""
    vdi = _desktops_and_hosts()
    vdi.update(_organisations(development))
    vdi.update(_console_proxy(development, allowed_hosts, csrf_trusted_origins))
    _check_networks_and_placement(vdi)
    vdi.update(_metrics())
    return vdi


# --- product settings -----------------------------------------------------------------------
def _desktops_and_hosts() -> dict[str, Any]:
    return {
        # Lifetime of a console password set on a live domain (a pool may set its own, within
        # the same bounds).
        "TICKET_TTL_S": env_int_between("VDI_TICKET_TTL_S", 120, TICKET_TTL_MIN_S,
                                        TICKET_TTL_MAX_S),
        # The most desktops one pool may have, so that one tenant's pool cannot take every host.
        "POOL_MAX_DESKTOPS": env_int_between("VDI_POOL_MAX_DESKTOPS", 100, 1, 100_000),
        # How long a connect request waits for a worker to set the ticket before answering 202.
        "TICKET_WAIT_S": float(os.environ.get("VDI_TICKET_WAIT_S", "10")),
        # What a pending connect tells the client to wait before polling again.
        "RETRY_AFTER_S": int(os.environ.get("VDI_RETRY_AFTER_S", "3")),
        # An operation still running past this deadline is reaped.
        "OPERATION_DEADLINE_S": int(os.environ.get("VDI_OPERATION_DEADLINE_S", "600")),
        # Seconds a libvirt call may take before it is abandoned.
        "LIBVIRT_CALL_TIMEOUT_S": float(os.environ.get("VDI_LIBVIRT_CALL_TIMEOUT_S", "30")),
        # A host that fails this many checks in a row is marked down, its desktops unknown.
        "HOST_DOWN_AFTER_FAILURES": int(os.environ.get("VDI_HOST_DOWN_AFTER_FAILURES", "3")),
        # A lab's hosts only: host URIs may say qemu+ssh://…?no_verify=1 (the lab's own sshd on
        # loopback has a throwaway host key). Never on for real hosts.
        "HOST_URI_ALLOW_NO_VERIFY": env_bool("VDI_HOST_URI_ALLOW_NO_VERIFY"),
        # Tenant networks on "tenant" hosts (docs/hosts.md): tenant N's isolated networks get
        # the Nth subnet of this size from this range (its address .1 is the host's, with DHCP).
        "TENANT_NETWORK_RANGE": os.environ.get("VDI_TENANT_NETWORK_RANGE", "10.128.0.0/9"),
        "TENANT_NETWORK_PREFIX": env_int_between("VDI_TENANT_NETWORK_PREFIX", 24, 8, 29),
        # Tenant N's libvirt networks (and their bridges) are named <this>N.
        "TENANT_NETWORK_NAME": os.environ.get("VDI_TENANT_NETWORK_NAME", "vdi-t"),
        # Placement: "spread" puts a desktop on the least committed host, "pack" on the most
        # committed one that still has room (fewer hosts busy).
        "PLACEMENT": os.environ.get("VDI_PLACEMENT", "spread"),
        # How long a graceful shutdown may take before the desktop is powered off.
        "SHUTDOWN_GRACE_S": float(os.environ.get("VDI_SHUTDOWN_GRACE_S", "60")),
        # How long an Idempotency-Key is remembered.
        "IDEMPOTENCY_TTL_H": int(os.environ.get("VDI_IDEMPOTENCY_TTL_H", "24")),
        # How soon an operation waiting for a boot slot on its host looks again.
        "BOOT_SLOT_RETRY_S": float(os.environ.get("VDI_BOOT_SLOT_RETRY_S", "2")),
        # How often the portal's live parts (desktop states, pool spares, a pending Connect) ask
        # for news while something is changing; five times slower once all is settled.
        "PORTAL_POLL_S": float(os.environ.get("VDI_PORTAL_POLL_S", "2")),
    }


# --- organisations: default quotas and invitations (tenants/services.py) --------------------
def default_quota(name: str, production: int, development: bool) -> int | None:
    """A new organisation's quota when its creator gives none: a whole number, or empty for
    unlimited. Unset: ``production`` in production, unlimited in demo and test."""
    raw = os.environ.get(name, "" if development else str(production)).strip()
    if raw and not raw.isdigit():
        raise ImproperlyConfigured(f"{name} must be a whole number or empty, not {raw!r}")
    return int(raw) if raw else None


def _organisations(development: bool) -> dict[str, Any]:
    organisations = {
        "DEFAULT_TENANT_QUOTAS": {
            "max_desktops": default_quota("VDI_DEFAULT_TENANT_MAX_DESKTOPS", 50, development),
            "max_vcpus": default_quota("VDI_DEFAULT_TENANT_MAX_VCPUS", 100, development),
            "max_memory_mb": default_quota("VDI_DEFAULT_TENANT_MAX_MEMORY_MB", 204800,
                                           development),
            "max_sessions": default_quota("VDI_DEFAULT_TENANT_MAX_SESSIONS", 50, development),
        },
        # How long an invitation to an organisation (and its e-mailed link) stays valid.
        "INVITATION_TTL_H": int(os.environ.get("VDI_INVITATION_TTL_H", "72")),
    }
    if organisations["INVITATION_TTL_H"] < 1:
        raise ImproperlyConfigured("VDI_INVITATION_TTL_H must be at least 1")
    return organisations


# --- browser console proxy (manage.py console_proxy; docs/connecting.md) ---------------------
def console_origins(development: bool, allowed_hosts: list[str],
                    csrf_trusted_origins: list[str]) -> list[str]:
    """Origins whose pages may open console websockets: VDI_CONSOLE_ALLOWED_ORIGINS, else
    CSRF_TRUSTED_ORIGINS plus https://HOST for each plain ALLOWED_HOSTS entry; in demo and
    test also http(s)://HOST on any port (``:*``), the port being the dev server's."""
    if os.environ.get("VDI_CONSOLE_ALLOWED_ORIGINS", "").strip():
        return env_list("VDI_CONSOLE_ALLOWED_ORIGINS")
    origins = list(csrf_trusted_origins)
    for host in allowed_hosts:
        if host in {"*", "testserver"} or host.startswith((".", "*")):
            continue
        origins += [f"http://{host}:*", f"https://{host}:*"] if development else [f"https://{host}"]
    return origins


def console_proxy_tls() -> tuple[str, str]:
    """The PEM certificate chain and private key the console proxy serves wss:// with, or
    two empty strings (ws://). Both or neither; the files are read when the proxy starts
    (the portal only needs to know that it serves TLS, not the key)."""
    cert = os.environ.get("VDI_CONSOLE_PROXY_TLS_CERT", "").strip()
    key = os.environ.get("VDI_CONSOLE_PROXY_TLS_KEY", "").strip()
    if bool(cert) != bool(key):
        raise ImproperlyConfigured(
            "VDI_CONSOLE_PROXY_TLS_CERT and VDI_CONSOLE_PROXY_TLS_KEY go together: set both "
            f"(PEM file paths) to serve wss://, or neither; only "
            f"{'VDI_CONSOLE_PROXY_TLS_CERT' if cert else 'VDI_CONSOLE_PROXY_TLS_KEY'} is set")
    return cert, key


def _console_proxy(development: bool, allowed_hosts: list[str],
                   csrf_trusted_origins: list[str]) -> dict[str, Any]:
    tls_cert, tls_key = console_proxy_tls()
    console = {
        # Where `manage.py console_proxy` listens (HOST:PORT; --listen overrides it).
        "CONSOLE_PROXY_LISTEN": os.environ.get("VDI_CONSOLE_PROXY_LISTEN", "127.0.0.1:6080"),
        # The websocket URL browsers use to reach the proxies (e.g. wss://console.example.com/);
        # empty: ws(s)://<the portal's host name>:<the listen port>/, wss:// when the proxy
        # serves TLS itself (below) or the page is https.
        "CONSOLE_PROXY_URL": os.environ.get("VDI_CONSOLE_PROXY_URL", ""),
        # The proxy serves wss:// itself with this certificate chain and key (PEM file paths;
        # --tls-cert/--tls-key override them); empty: ws://, TLS ending at a load balancer.
        "CONSOLE_PROXY_TLS_CERT": tls_cert,
        "CONSOLE_PROXY_TLS_KEY": tls_key,
        "CONSOLE_ALLOWED_ORIGINS": console_origins(development, allowed_hosts,
                                                   csrf_trusted_origins),
        # Behind a load balancer: take the browser's address from the last X-Forwarded-For hop.
        "CONSOLE_PROXY_TRUST_FORWARDED_FOR": env_bool("VDI_CONSOLE_PROXY_TRUST_FORWARDED_FOR"),
        # How often each open browser console asks whether its session is still live; an
        # ended session's console is closed within about this long.
        "CONSOLE_PROXY_RECHECK_S": float(os.environ.get("VDI_CONSOLE_PROXY_RECHECK_S", "2")),
        # Abuse limits, per proxy process (0: none): open connections from one client address
        # and in all, and how long a connection may take to finish its websocket handshake.
        "CONSOLE_PROXY_MAX_PER_ADDRESS": env_int_between("VDI_CONSOLE_PROXY_MAX_PER_ADDRESS", 10,
                                                         0, 100_000),
        "CONSOLE_PROXY_MAX_CONNECTIONS": env_int_between("VDI_CONSOLE_PROXY_MAX_CONNECTIONS",
                                                         500, 0, 100_000),
        "CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S": float(
            os.environ.get("VDI_CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S", "10")),
    }
    if not console["CONSOLE_PROXY_RECHECK_S"] > 0:
        raise ImproperlyConfigured("VDI_CONSOLE_PROXY_RECHECK_S must be a positive number of "
                                   f"seconds, not {console['CONSOLE_PROXY_RECHECK_S']}")
    return console


def _check_networks_and_placement(vdi: dict[str, Any]) -> None:
    try:
        tenant_range = ipaddress.IPv4Network(vdi["TENANT_NETWORK_RANGE"])
    except ValueError as error:
        raise ImproperlyConfigured(f"VDI_TENANT_NETWORK_RANGE: {error}") from None
    if not tenant_range.is_private or tenant_range.prefixlen > vdi["TENANT_NETWORK_PREFIX"]:
        raise ImproperlyConfigured(
            f"VDI_TENANT_NETWORK_RANGE {tenant_range} must be a private IPv4 range of at least "
            f"one /{vdi['TENANT_NETWORK_PREFIX']} (VDI_TENANT_NETWORK_PREFIX)")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,9}", vdi["TENANT_NETWORK_NAME"]):
        raise ImproperlyConfigured(
            "VDI_TENANT_NETWORK_NAME must be 1-10 lower-case letters, digits or dashes, starting "
            "with a letter (bridge names are at most 15 characters), not "
            f"{vdi['TENANT_NETWORK_NAME']!r}")
    if vdi["PLACEMENT"] not in {"spread", "pack"}:
        raise ImproperlyConfigured(
            f"VDI_PLACEMENT must be spread or pack, not {vdi['PLACEMENT']!r}")


# --- metrics ----------------------------------------------------------------------------------
def _metrics() -> dict[str, Any]:
    metrics = {
        # Who may read /metrics (config/metrics.py): these addresses or networks, or a request
        # with "Authorization: Bearer <VDI_METRICS_TOKEN>" (empty: no token is accepted).
        "METRICS_ALLOWED_IPS": env_list("VDI_METRICS_ALLOWED_IPS", "127.0.0.1,::1"),
        "METRICS_TOKEN": os.environ.get("VDI_METRICS_TOKEN", ""),
    }
    for network in metrics["METRICS_ALLOWED_IPS"]:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"VDI_METRICS_ALLOWED_IPS: {network!r} is not an "
                                       "address or network") from None
    return metrics
