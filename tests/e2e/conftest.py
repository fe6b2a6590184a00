"""The real-hypervisor lab for end-to-end tests: read what `scripts/lab start` wrote.

These tests never skip: a missing lab is a failure that says how to start it, so a test run
cannot silently lose its only proof against a real libvirtd + QEMU.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import libvirt
import pytest

from hypervisors.models import Host, HostNetwork
from tenants.scoping import scopes_disabled
from tests.e2e.clients import RemoteViewer
from tests.e2e.lab import register_lab_host
from tests.processes import celery_worker
from vdi.choices import ImageBoot
from vdi.models import Desktop, Image
from vdi.services import image_save

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


# --- the product on the lab: a real worker, the lab registered as a host, a kernel image ----
WORKER_ENV = {"VDI_SHUTDOWN_GRACE_S": "5"}


@pytest.fixture
def libvirt_conn(lab):
    """A connection of the test's own to the lab's libvirtd, to look behind the product."""
    conn = libvirt.open(lab["VDI_LAB_URI"])
    yield conn
    conn.close()


@pytest.fixture
def remove_guests(transactional_db, lab, libvirt_conn):
    """Guests outlive the test's database: destroy and remove the ones the test made.

    Ask for it before ``worker`` so it runs after the worker has stopped."""
    yield
    with scopes_disabled():
        desktops = list(Desktop.objects.values_list("name", "volume_name"))
    storage = libvirt_conn.storagePoolLookupByName(lab["VDI_LAB_POOL"])
    for name, volume in desktops:
        _remove(libvirt_conn.lookupByName, name)
        try:
            storage.storageVolLookupByName(volume).delete(0)
        except libvirt.libvirtError:
            pass
    with scopes_disabled():
        networks = list(HostNetwork.objects.values_list("name", flat=True))
    for name in networks:  # the tenants' networks
        _remove(libvirt_conn.networkLookupByName, name)


def _remove(lookup, name: str) -> None:
    """Stop and undefine a domain or network, if it is still there."""
    try:
        thing = lookup(name)
        if thing.isActive():
            thing.destroy()
        thing.undefine()
    except libvirt.libvirtError:
        pass  # already gone


@pytest.fixture
def worker(remove_guests, tmp_path, lab):
    with celery_worker(tmp_path, WORKER_ENV) as log:
        yield log


@pytest.fixture
def lab_host(api, lab, worker) -> Host:
    """The lab's libvirtd, registered as staff would: through the API, probed by the worker."""
    return register_lab_host(api, lab, worker, name="lab-1", uri=lab["VDI_LAB_URI"])


@pytest.fixture
def lab_image(lab) -> Image:
    return image_save(image=Image(
        name="lab-guest", version=1, base_volume=lab["VDI_LAB_BASE_VOLUME"], disk_gb=1,
        default_memory_mb=160, boot=ImageBoot.KERNEL, kernel=lab["VDI_LAB_KERNEL"],
        initrd=lab["VDI_LAB_INITRD"], cmdline=lab["VDI_LAB_CMDLINE"],
    ))


@pytest.fixture
def lab_pool(make_pool, lab_host, lab_image):
    def make(**fields):
        return make_pool(image=lab_image, memory_mb=160, protocol="spice", **fields)

    return make


@pytest.fixture
def remote_viewer(tmp_path):
    """``remote_viewer(vv_path)``: remote-viewer opening that file on a virtual X display
    (a context manager, ``clients.RemoteViewer``), its log next to the test's other logs."""
    missing = [tool for tool in ("remote-viewer", "xvfb-run") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `scripts/lab start` installs virt-viewer "
                    "and xvfb", pytrace=False)
    return lambda vv: RemoteViewer(vv, tmp_path / f"{vv.stem}.remote-viewer.log")
