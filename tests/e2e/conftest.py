"""The real-hypervisor lab for end-to-end tests: read what `scripts/lab start` wrote.

These tests never skip: a missing lab is a failure that says how to start it, so a test run
cannot silently lose its only proof against a real libvirtd + QEMU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_LAB_DIR = "/var/cache/vdi-lab"
REQUIRED_KEYS = (
    "VDI_LAB_URI", "VDI_LAB_POOL", "VDI_LAB_BASE_VOLUME", "VDI_LAB_KERNEL", "VDI_LAB_INITRD",
    "VDI_LAB_CMDLINE", "VDI_LAB_CONSOLE_ADDRESS", "VDI_LAB_READY_LINE",
)


def read_lab_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments are ignored, values are not quoted."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def lab():
    """The lab's settings from ``$VDI_LAB_DIR/lab.env`` (a dict), checked to be usable."""
    lab_dir = Path(os.environ.get("VDI_LAB_DIR") or DEFAULT_LAB_DIR)
    env_file = lab_dir / "lab.env"
    if not env_file.is_file():
        pytest.fail(f"no hypervisor lab: {env_file} is missing; run `scripts/lab start` "
                    "(scripts/test does it for you)", pytrace=False)
    values = read_lab_env(env_file)
    missing = [key for key in REQUIRED_KEYS if not values.get(key)]
    if missing:
        pytest.fail(f"{env_file} lacks {', '.join(missing)}; rerun `scripts/lab start`",
                    pytrace=False)
    if values["VDI_LAB_URI"] == "qemu:///system" and not Path("/run/libvirt/libvirt-sock").exists():
        pytest.fail("libvirtd is not running (no /run/libvirt/libvirt-sock); run `scripts/lab start`",
                    pytrace=False)
    for key in ("VDI_LAB_KERNEL", "VDI_LAB_INITRD"):
        if not Path(values[key]).is_file():
            pytest.fail(f"{key}={values[key]} does not exist; run `scripts/lab start`",
                        pytrace=False)
    values.setdefault("VDI_LAB_SERIAL_LOG_DIR", "/var/log/libvirt/qemu")

    # Register as a holder: another run's `scripts/lab stop` (scripts/test's exit) then
    # leaves the lab up while this session uses it. Stale entries are pruned by pid.
    holder = lab_dir / "holders" / str(os.getpid())
    try:
        holder.parent.mkdir(exist_ok=True)
        holder.touch()
    except OSError:
        holder = None
    yield values
    if holder is not None:
        holder.unlink(missing_ok=True)
