"""Helpers for end-to-end tests on the lab: waiting for desktops, reading logs."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.test import override_settings

from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from tests.processes import wait_for
from vdi.models import Desktop, Operation


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text()[-chars:]


def desktop_in(pool, state: str, worker: Path) -> Desktop:
    """Wait for a desktop of ``pool`` in ``state``; a failed operation fails at once."""

    def reached():
        with scopes_disabled():
            failed = Operation.objects.filter(pool=pool, state="failed").first()
            assert failed is None, f"{failed.kind} failed: {failed.error}"
            return Desktop.objects.filter(pool=pool, state=state).first()

    return wait_for(reached, 120, lambda: f"a {state} desktop (worker log:\n{tail(worker)})")


def wait_desktop(desktop: Desktop, state: str, worker: Path, timeout_s: float = 90) -> Desktop:
    def reached():
        with scopes_disabled():
            fresh = Desktop.objects.filter(pk=desktop.pk).first()
        return fresh if fresh is not None and fresh.state == state else None

    return wait_for(reached, timeout_s, lambda: f"{desktop.name} {state} "
                    f"(worker log:\n{tail(worker)})")


def serial_log(desktop: Desktop) -> str:
    path = Path(f"/var/log/libvirt/qemu/{desktop.name}-serial.log")
    return path.read_text(errors="replace") if path.exists() else ""


def register_lab_host(api, lab, worker: Path, *, name: str, uri: str) -> Host:
    """Register the lab's libvirtd as staff would, through the API, and wait for the
    worker's check to bring it up with its virt types and the lab's base volume. This is the
    lab: its own sshd's throwaway host key need not be verified (``no_verify=1``)."""
    with override_settings(VDI={**settings.VDI, "HOST_URI_ALLOW_NO_VERIFY": True}):
        response = api("staff").post("/api/v1/hosts/", {
            "name": name, "uri": uri, "virt_type": "qemu",
            "console_address": lab["VDI_LAB_CONSOLE_ADDRESS"],
            "storage_pool": lab["VDI_LAB_POOL"], "max_concurrent_boots": 2,
        }, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])

    def up():
        host.refresh_from_db()
        assert host.state in (HostState.NEW, HostState.UP), host.last_error
        return host.state == HostState.UP

    wait_for(up, 90, lambda: f"host {name} to come up (worker log:\n{tail(worker)})")
    assert "qemu" in host.virt_types
    assert lab["VDI_LAB_BASE_VOLUME"] in host.volumes
    return host
