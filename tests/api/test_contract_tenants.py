"""Contract: tenants (staff create, change, suspend and resume them; members list and read
their own; owners rename theirs)."""

from tenants.models import Tenant
from tests.api.contract import AUTHENTICATED, STAFF, Action, Contract

FIELDS = frozenset({"id", "slug", "name", "status", "max_desktops", "max_vcpus",
                    "max_memory_mb", "max_sessions", "created_at"})


class TestTenants(Contract):
    model = Tenant
    list_url = "/api/v1/tenants/"
    fields = FIELDS
    lookup_field = "slug"
    # Every signed-in user reaches the route; only acme's members (and staff) see acme.
    reach = AUTHENTICATED
    hidden_from = frozenset({"outsider"})
    may = {"list": AUTHENTICATED, "get": AUTHENTICATED, "create": STAFF,
           "update": STAFF | {"owner"}}
    actions = (
        Action("suspend", may=STAFF, fields=FIELDS),
        Action("resume", may=STAFF, fields=FIELDS),
    )

    def make_object(self, world):
        return world.tenant

    def create_body(self, world):
        return {"slug": "initech", "name": "Initech", "max_desktops": 10}

    def update_body(self, world):
        return {"name": "Acme Corporation"}

    def audit_tenant(self, world):
        """Changing an organisation goes into its own trail."""
        return world.tenant

    def before_action(self, world, obj, action):
        if action.name == "resume":  # something to resume
            Tenant.objects.filter(pk=obj.pk).update(status="suspended")
