"""Contract: a tenant's members (every member lists them; owners and admins manage)."""

from tenants.models import Membership
from tenants.scoping import scopes_disabled
from tests.api.contract import IN_TENANT, TENANT_ADMINS, TenantContract


class TestMembers(TenantContract):
    model = Membership
    list_url = "/api/v1/tenants/acme/members/"
    fields = frozenset({"id", "username", "email", "role", "created_at"})
    may = {"list": IN_TENANT, "get": IN_TENANT, "create": TENANT_ADMINS,
           "update": TENANT_ADMINS, "delete": TENANT_ADMINS}

    def make_object(self, world):
        with scopes_disabled():
            return Membership.objects.get(tenant=world.tenant, user=world.users["member"])

    def create_body(self, world):
        world.make_user("newcomer")
        return {"username": "newcomer", "role": "member"}

    def update_body(self, world):
        return {"role": "admin"}
