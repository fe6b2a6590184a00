"""Contract: the tenant's audit trail (owners and admins read it; nobody writes it)."""

from tenants.models import AuditEvent
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.audit import audit_record
from tests.api.contract import TENANT_ADMINS, TenantContract


class TestAudit(TenantContract):
    model = AuditEvent
    list_url = "/api/v1/tenants/acme/audit/"
    fields = frozenset({"id", "created_at", "actor", "action", "object_type", "object_id",
                        "result", "details", "source", "source_ip", "request_id"})
    may = {"list": TENANT_ADMINS, "get": TENANT_ADMINS}

    def count(self) -> int:
        """The tenant's entries: logging in to the API makes a platform entry."""
        with scopes_disabled():
            return AuditEvent.objects.filter(tenant__slug="acme").count()

    def make_object(self, world):
        with tenant_scope(world.tenant):
            return audit_record(tenant=world.tenant, actor=world.users["owner"],
                                action="pool.create", target=world.make_pool(),
                                source_ip="192.0.2.1")
