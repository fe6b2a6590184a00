"""Contract: desktops (read-only rows; power actions answer 202 with the operation)."""

from tenants.scoping import scopes_disabled
from tests.api.contract import (IN_TENANT, OPERATION_FIELDS, TENANT_ADMINS, TICKET_FIELDS,
                                Action, TenantContract)
from tests.api.test_slice import assert_error
from vdi.models import Desktop

POWER = tuple(Action(kind, IN_TENANT, 202, OPERATION_FIELDS)
              for kind in ("start", "shutdown", "poweroff", "reboot", "reset"))


class TestDesktops(TenantContract):
    model = Desktop
    list_url = "/api/v1/tenants/acme/desktops/"
    fields = frozenset({"id", "name", "pool", "image", "host", "state", "state_changed_at",
                        "assigned_user", "vcpus", "memory_mb", "last_error", "created_at"})
    may = {"list": IN_TENANT, "get": IN_TENANT}
    # Members act on their own desktops; tenant admins on all, and may take one over (its
    # user's session ends, they get a session and a ticket of their own).
    actions = (*POWER, Action("takeover", TENANT_ADMINS, 200, TICKET_FIELDS, eager=True))

    def make_object(self, world):
        return world.desktop_of("member")

    def before_action(self, world, obj, action):
        if action.name == "start":  # the only one that needs the desktop stopped
            with scopes_disabled():
                Desktop.objects.filter(pk=obj.pk).update(state="stopped")

    def make_private_object(self, world):
        return world.desktop_of("admin", pool_name="Admins")


def test_an_illegal_transition_is_a_409_and_records_nothing(api, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
        operations = desktop.operations.count()
    response = api("admin").post(f"/api/v1/tenants/acme/desktops/{desktop.id}/start/")
    assert assert_error(response, 409, "invalid_state")["details"] == {"state": "running"}
    with scopes_disabled():
        assert desktop.operations.count() == operations
