"""Contract: sessions (a user's own; tenant admins see and end all)."""

from brokers.models import Session
from tests.api.contract import (IN_TENANT, SESSION_FIELDS, TICKET_FIELDS, Action,
                                TenantContract)

# Only the session's own user gets console tickets: the desktop has one console owner (an
# admin takes the desktop over instead).
OWNER_ONLY = frozenset({"member"})


class TestSessions(TenantContract):
    model = Session
    list_url = "/api/v1/tenants/acme/sessions/"
    fields = SESSION_FIELDS
    may = {"list": IN_TENANT, "get": IN_TENANT}
    actions = (
        Action("ticket", OWNER_ONLY, 200, TICKET_FIELDS, eager=True),
        Action("console.vv", OWNER_ONLY, 200, method="get", suffix="console.vv",
               content_type="application/x-virt-viewer", eager=True),
        Action("end", IN_TENANT, 200, SESSION_FIELDS),
    )

    def make_object(self, world):
        return world.session_of("member")

    def make_private_object(self, world):
        return world.session_of("admin", pool_name="Admins")
