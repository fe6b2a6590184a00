"""Contract: hypervisor hosts (platform staff only)."""

from hypervisors.models import Host
from tests.api.contract import STAFF, Action, PlatformContract

HOST_FIELDS = frozenset({
    "id", "name", "uri", "virt_type", "console_address", "enabled", "state", "cpus",
    "memory_mb", "cpu_overcommit", "memory_overcommit", "max_concurrent_boots", "storage_pool",
    "used_vcpus", "used_memory_mb", "desktop_count", "last_error", "created_at"})


class TestHosts(PlatformContract):
    model = Host
    list_url = "/api/v1/hosts/"
    fields = HOST_FIELDS
    may = {"list": STAFF, "get": STAFF, "create": STAFF, "update": STAFF, "delete": STAFF}
    actions = (
        Action("drain", STAFF, 200, HOST_FIELDS),
        Action("activate", STAFF, 202, HOST_FIELDS),
        Action("refresh", STAFF, 202, HOST_FIELDS),
    )

    def make_object(self, world):
        return world.host

    def create_body(self, world):
        return {"name": "sim-2", "uri": "test:///default", "virt_type": "qemu",
                "console_address": "127.0.0.1", "storage_pool": "default-pool"}

    def update_body(self, world):
        return {"max_concurrent_boots": 2, "cpu_overcommit": 2.0}
