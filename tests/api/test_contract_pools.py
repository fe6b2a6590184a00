"""Contract: pools (members see those they are entitled to; tenant admins write)."""

from tests.api.contract import IN_TENANT, PENDING_FIELDS, TENANT_ADMINS, Action, TenantContract
from vdi.models import Pool

POOL_FIELDS = frozenset({
    "id", "name", "description", "image", "kind", "protocol", "vcpus", "memory_mb",
    "min_ready", "min_stopped", "max_desktops", "max_per_user", "idle_timeout_s",
    "max_session_s", "on_logoff", "ticket_ttl_s", "entitle_all_members", "enabled",
    "deleting_since", "desktop_count", "desktops_on_image", "provisioning_error", "created_at"})


class TestPools(TenantContract):
    model = Pool
    list_url = "/api/v1/tenants/acme/pools/"
    fields = POOL_FIELDS
    may = {"list": IN_TENANT, "get": IN_TENANT, "create": TENANT_ADMINS,
           "update": TENANT_ADMINS, "delete": TENANT_ADMINS}
    # Deleting answers 202: the pool is disabled at once and removed in the background.
    delete_status = 202
    # No spare is running, so Connect answers 202 pending (the provisioning is not run here).
    actions = (Action("connect", IN_TENANT, 202, PENDING_FIELDS),)

    def make_object(self, world):
        return world.make_pool(name="Office")

    def create_body(self, world):
        return {"name": "Engineering", "image": str(world.image.id), "memory_mb": 256,
                "protocol": "vnc", "max_desktops": 3}

    def update_body(self, world):
        return {"name": "Back office", "max_desktops": 4}

    def assert_deleted(self, world, obj, body):
        obj.refresh_from_db()
        assert body["deleting_since"] and obj.deleting_since and not obj.enabled

    def make_private_object(self, world):
        return world.make_pool(name="Restricted", entitle_all_members=False)
