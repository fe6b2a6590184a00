"""Helpers for end-to-end tests on the lab: waiting for desktops, reading logs."""

from __future__ import annotations

from pathlib import Path

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
