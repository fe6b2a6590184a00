"""Contract: a tenant's members (every member lists them; owners and admins invite, change
roles and remove), the organisation's invitations (owners and admins), and the invitations
a person received (only they see and answer them)."""

from tenants.models import Invitation, Membership
from tenants.scoping import scopes_disabled
from tenants.members import membership_invite
from tests.api.contract import (AUTHENTICATED, IN_TENANT, TENANT_ADMINS, Action, Contract,
                                TenantContract, assert_refused, client_for)

INVITATION_FIELDS = frozenset({"id", "state", "role", "username", "email", "invited_by",
                               "created_at", "expires_at", "accepted_at"})
SITE = "http://testserver/"
MY_INVITATION_FIELDS = frozenset({"id", "tenant", "state", "role", "invited_by", "created_at",
                                  "expires_at", "accepted_at"})


def invitation_count() -> int:
    with scopes_disabled():
        return Invitation.objects.count()


class TestMembers(TenantContract):
    model = Membership
    list_url = "/api/v1/tenants/acme/members/"
    fields = frozenset({"id", "username", "email", "role", "created_at"})
    may = {"list": IN_TENANT, "get": IN_TENANT, "create": TENANT_ADMINS,
           "update": TENANT_ADMINS, "delete": TENANT_ADMINS}
    create_status = 202

    def make_object(self, world):
        with scopes_disabled():
            return Membership.objects.get(tenant=world.tenant, user=world.users["member"])

    def create_body(self, world):
        world.make_user("newcomer")
        return {"username": "newcomer", "role": "member"}

    def update_body(self, world):
        return {"role": "admin"}

    def test_create(self, role, world, obj, api):
        """Adding someone is an invitation: 202 with it, nobody added yet, and the same
        invitation at ``invitations/{id}/``."""
        expected = self.expected("create", role, self.create_status, detail=False)
        body = self.create_body(world)
        before = self.count(), invitation_count()
        client = client_for(api, role)
        response = client.post(self.list_url, body, format="json")
        if expected != self.create_status:
            assert_refused(response, expected)
            assert (self.count(), invitation_count()) == before
            return
        assert response.status_code == expected, response.content
        created = response.json()
        assert set(created) == INVITATION_FIELDS, created
        assert (created["state"], created["username"], created["role"]) == (
            "pending", "newcomer", "member")
        assert (self.count(), invitation_count()) == (before[0], before[1] + 1)
        again = client.get(f"/api/v1/tenants/acme/invitations/{created['id']}/")
        assert again.status_code == 200 and again.json() == created


class TestInvitations(TenantContract):
    """What the organisation invited: read by its owners and admins, revoked by DELETE (the
    row stays, ``revoked``)."""

    model = Invitation
    list_url = "/api/v1/tenants/acme/invitations/"
    fields = INVITATION_FIELDS
    may = {"list": TENANT_ADMINS, "get": TENANT_ADMINS, "delete": TENANT_ADMINS}

    def make_object(self, world):
        world.make_user("newcomer")
        return membership_invite(tenant=world.tenant, actor=world.users["owner"],
                                 username="newcomer", role="member", site_url=SITE)

    def assert_deleted(self, world, obj, body):
        assert self.snapshot(obj)["state"] == "revoked"


class TestMyInvitations(Contract):
    """A person's own invitations: acme's member invited to globex. Everyone signed in
    reaches the route; nobody but the person invited sees or answers the invitation."""

    model = Invitation
    list_url = "/api/v1/invitations/"
    fields = MY_INVITATION_FIELDS
    reach = AUTHENTICATED
    hidden_from = AUTHENTICATED - {"member"}
    may = {"list": AUTHENTICATED, "get": AUTHENTICATED}
    actions = (
        Action("accept", may=frozenset({"member"}), fields=MY_INVITATION_FIELDS),
        Action("decline", may=frozenset({"member"}), fields=MY_INVITATION_FIELDS),
    )

    def make_object(self, world):
        return membership_invite(tenant=world.other_tenant, actor=world.users["outsider"],
                                 username="member", role="admin", site_url=SITE)

    def audit_tenant(self, world):
        """Answering an invitation goes into the inviting organisation's trail."""
        return world.other_tenant
