"""Contract: tenants (staff create them; members list and read their own)."""

from tenants.models import Tenant
from tests.api.contract import AUTHENTICATED, STAFF, Contract


class TestTenants(Contract):
    model = Tenant
    list_url = "/api/v1/tenants/"
    fields = frozenset({"id", "slug", "name", "status", "max_desktops", "max_vcpus",
                        "max_memory_mb", "max_sessions", "created_at"})
    lookup_field = "slug"
    # Every signed-in user reaches the route; only acme's members (and staff) see acme.
    reach = AUTHENTICATED
    hidden_from = frozenset({"outsider"})
    may = {"list": AUTHENTICATED, "get": AUTHENTICATED, "create": STAFF}

    def make_object(self, world):
        return world.tenant

    def create_body(self, world):
        return {"slug": "initech", "name": "Initech", "max_desktops": 10}
