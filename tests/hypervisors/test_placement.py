"""Placement (host_place): which host a new desktop goes to."""

from __future__ import annotations

import itertools

import pytest

from hypervisors.choices import HostState
from hypervisors.models import Host
from hypervisors.services import host_place
from tenants.scoping import scopes_disabled
from vdi.choices import DesktopState
from vdi.models import Desktop

RESERVING = [
    DesktopState.PROVISIONING,
    DesktopState.STARTING,
    DesktopState.RUNNING,
    DesktopState.STOPPING,
    DesktopState.RECYCLING,
    DesktopState.UNKNOWN,
]
NOT_RESERVING = [DesktopState.PENDING, DesktopState.STOPPED, DesktopState.ERROR]

_desktop_numbers = itertools.count()


@pytest.fixture
def make_host(db):
    def make(name: str, **fields) -> Host:
        defaults = {
            "uri": "test:///default", "virt_type": "qemu", "console_address": "127.0.0.1",
            "storage_pool": "default-pool", "state": HostState.UP, "cpus": 4,
            "memory_mb": 8192, "cpu_overcommit": 1.0, "memory_overcommit": 1.0,
        }
        defaults.update(fields)
        return Host.objects.create(name=name, **defaults)

    return make


@pytest.fixture
def place_desktop(make_pool, tenant, image):
    """``place_desktop(host, vcpus=..., memory_mb=..., state=...)``: a Desktop row on ``host``."""
    pool = make_pool()

    def place(host: Host, *, vcpus: int = 1, memory_mb: int = 512,
              state: str = DesktopState.RUNNING) -> Desktop:
        with scopes_disabled():
            return Desktop.objects.create(
                tenant=tenant, pool=pool, image=image, name=f"desk-{next(_desktop_numbers)}",
                vcpus=vcpus, memory_mb=memory_mb, host=host, state=state,
            )

    return place


# --- host_place -----------------------------------------------------------------------------
def test_picks_the_least_loaded_host(make_host, place_desktop):
    # Named so that the name tie-break alone would pick the busier host.
    busy, idle = make_host("a-busy"), make_host("b-idle")
    place_desktop(busy, vcpus=2)
    place_desktop(idle, vcpus=1)

    assert host_place(vcpus=1, memory_mb=512) == idle


def test_load_counts_vcpus_not_desktops(make_host, place_desktop):
    many_small, one_big = make_host("a-many-small", cpus=8), make_host("b-one-big", cpus=8)
    for _ in range(3):
        place_desktop(many_small, vcpus=1)
    place_desktop(one_big, vcpus=4)

    assert host_place(vcpus=1, memory_mb=512) == many_small


@pytest.mark.parametrize(
    "ineligible",
    [
        {"enabled": False},
        {"state": HostState.DOWN},
        {"state": HostState.MAINTENANCE},
        {"state": HostState.NEW},
    ],
    ids=["disabled", "down", "maintenance", "new"],
)
def test_skips_hosts_that_are_not_enabled_and_up(make_host, place_desktop, ineligible):
    make_host("a-ineligible", **ineligible)  # idle, so it would win on load
    eligible = make_host("b-eligible")
    place_desktop(eligible, vcpus=2)

    assert host_place(vcpus=1, memory_mb=512) == eligible

    Host.objects.filter(pk=eligible.pk).update(enabled=False)
    assert host_place(vcpus=1, memory_mb=512) is None


def test_vcpu_capacity_follows_cpu_overcommit(make_host, place_desktop):
    host = make_host("h", cpus=2, cpu_overcommit=2.5, memory_mb=65536)  # 5 vCPUs
    place_desktop(host, vcpus=3)

    assert host_place(vcpus=2, memory_mb=512) == host
    assert host_place(vcpus=3, memory_mb=512) is None


def test_memory_capacity_follows_memory_overcommit(make_host, place_desktop):
    host = make_host("h", cpus=64, memory_mb=4096, memory_overcommit=1.5)  # 6144 MiB
    place_desktop(host, memory_mb=4096)

    assert host_place(vcpus=1, memory_mb=2048) == host
    assert host_place(vcpus=1, memory_mb=2049) is None


def test_a_host_without_room_is_passed_over_for_a_busier_one_that_fits(
    make_host, place_desktop
):
    little_memory = make_host("a-little-memory", cpus=16, memory_mb=1024)
    roomy = make_host("b-roomy", cpus=16, memory_mb=16384)
    place_desktop(roomy, vcpus=8, memory_mb=1024)

    assert host_place(vcpus=1, memory_mb=2048) == roomy
    assert host_place(vcpus=1, memory_mb=512) == little_memory


@pytest.mark.parametrize("state", RESERVING)
def test_desktops_in_reserving_states_hold_capacity(make_host, place_desktop, state):
    host = make_host("h", cpus=2, memory_mb=4096)
    place_desktop(host, vcpus=2, memory_mb=1024, state=state)

    assert host_place(vcpus=1, memory_mb=512) is None


@pytest.mark.parametrize("state", NOT_RESERVING)
def test_desktops_that_do_not_run_hold_no_capacity(make_host, place_desktop, state):
    host = make_host("h", cpus=2, memory_mb=4096)
    place_desktop(host, vcpus=2, memory_mb=4096, state=state)

    assert host_place(vcpus=2, memory_mb=4096) == host


def test_none_when_there_are_no_hosts(db):
    assert host_place(vcpus=1, memory_mb=512) is None


def test_none_when_every_host_is_full(make_host, place_desktop):
    for name in ("a", "b"):
        place_desktop(make_host(name, cpus=2), vcpus=2)

    assert host_place(vcpus=1, memory_mb=512) is None


def test_pack_fills_the_busiest_host_that_still_fits(make_host, place_desktop, settings):
    settings.VDI = {**settings.VDI, "PLACEMENT": "pack"}
    busy, idle = make_host("a-busy"), make_host("b-idle")
    place_desktop(busy, vcpus=3)

    assert host_place(vcpus=1, memory_mb=512) == busy
    assert host_place(vcpus=2, memory_mb=512) == idle  # busy has one vCPU left


def test_hosts_without_the_images_base_volume_are_skipped(make_host):
    remote = {"uri": "qemu+tls://kvm.example.com/system"}
    lacking = make_host("a-lacking", volumes=["other.qcow2"], **remote)
    having = make_host("b-having", volumes=["debian-v1.qcow2"], **remote)

    assert host_place(vcpus=1, memory_mb=512, base_volume="debian-v1.qcow2") == having
    Host.objects.filter(pk=having.pk).update(volumes=[])
    assert host_place(vcpus=1, memory_mb=512, base_volume="debian-v1.qcow2") is None
    assert host_place(vcpus=1, memory_mb=512) == lacking
