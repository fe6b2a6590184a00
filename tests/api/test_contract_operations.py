"""Contract: operations (read-only; members see those on their own desktops)."""

from tenants.scoping import scopes_disabled
from tests.api.contract import IN_TENANT, OPERATION_FIELDS, TenantContract
from vdi.models import Operation


class TestOperations(TenantContract):
    model = Operation
    list_url = "/api/v1/tenants/acme/operations/"
    fields = OPERATION_FIELDS
    may = {"list": IN_TENANT, "get": IN_TENANT}

    def make_object(self, world):
        """The provisioning of a spare that was then handed to the member."""
        with scopes_disabled():
            return Operation.objects.get(desktop=world.desktop_of("member"))

    def make_private_object(self, world):
        with scopes_disabled():
            return Operation.objects.get(desktop=world.desktop_of("admin", pool_name="Admins"))
