"""Contract: golden images (platform staff only)."""

from tests.api.contract import STAFF, Action, PlatformContract
from vdi.models import Image

IMAGE_FIELDS = frozenset({
    "id", "tenant", "name", "version", "os", "base_volume", "disk_gb", "default_vcpus",
    "default_memory_mb", "boot", "kernel", "initrd", "cmdline", "created_at"})


class TestImages(PlatformContract):
    model = Image
    list_url = "/api/v1/images/"
    fields = IMAGE_FIELDS
    may = {"list": STAFF, "get": STAFF, "create": STAFF, "update": STAFF, "delete": STAFF}
    actions = (Action("publish", STAFF, 200, frozenset({"image", "pools"})),)

    def make_object(self, world):
        return world.image

    def create_body(self, world):
        return {"name": "ubuntu", "version": 1, "base_volume": "ubuntu-24.04.qcow2",
                "disk_gb": 2}

    def update_body(self, world):
        return {"os": "Debian 12", "default_vcpus": 2}
