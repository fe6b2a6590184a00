from rest_framework import serializers

from tenants.choices import Role
from tenants.models import INVITATION_STATES, Invitation, Membership, Tenant
from tenants.services import TENANT_QUOTAS, TENANT_STAFF_FIELDS

QUOTA_HELP = ("null: unlimited. Left out when creating: the platform's default "
              "(VDI_DEFAULT_TENANT_{}).")


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "status", "max_desktops", "max_vcpus", "max_memory_mb",
                  "max_sessions", "desktop_egress", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {quota: {"help_text": QUOTA_HELP.format(quota.upper())}
                        for quota in TENANT_QUOTAS}


class TenantUpdateSerializer(serializers.ModelSerializer):
    """``PATCH tenants/{slug}/``: only the fields sent change. Staff change any of these;
    an organisation's owners only ``name`` and ``desktop_egress``. The slug never changes (it is in every URL)."""

    class Meta:
        model = Tenant
        fields = sorted(TENANT_STAFF_FIELDS)
        extra_kwargs = {quota: {"help_text": "null: unlimited."} for quota in TENANT_QUOTAS}

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["This field can't be changed."] for name in unknown})
        return attrs


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(serializers.Serializer):
    """Exactly one of ``username`` and ``email``: whom to invite. Either way the answer is
    the same whether or not an account has that username or address."""

    username = serializers.CharField(
        max_length=150, required=False,
        help_text="Invite the account with this username: it gets an invitation to accept.")
    email = serializers.EmailField(
        max_length=254, required=False,
        help_text="Invite this address: a one-time link is e-mailed to it (a new address gets "
                  "an account, whose password the link chooses).")
    role = serializers.ChoiceField(choices=Role.choices)

    def validate(self, attrs):
        if ("username" in attrs) == ("email" in attrs):
            raise serializers.ValidationError("Give either a username or an e-mail address.")
        return attrs


class MembershipRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)

    # The body is always whole, PATCH included: ``role`` is required (also in the schema,
    # which otherwise documents PATCH bodies as partial).
    partial = property(lambda self: False, lambda self, value: None)


class InvitationSerializer(serializers.ModelSerializer):
    """An invitation as the organisation's owners and admins see it: whom they asked for, as
    they gave it, never which account (if any) that is."""

    state = serializers.ChoiceField(
        source="current_state", read_only=True, choices=INVITATION_STATES,
        help_text="pending (waiting for the person), accepted, declined, revoked, or expired "
                  "(pending past expires_at).")
    username = serializers.CharField(read_only=True,
                                     help_text="The username invited ('' for an e-mail).")
    email = serializers.CharField(read_only=True,
                                  help_text="The address invited ('' for a username).")
    invited_by = serializers.CharField(source="inviter.username", read_only=True,
                                       allow_null=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "state", "role", "username", "email", "invited_by", "created_at",
                  "expires_at", "accepted_at"]
        read_only_fields = fields


class InvitationTenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["slug", "name"]
        read_only_fields = fields


class MyInvitationSerializer(serializers.ModelSerializer):
    """An invitation as the person invited sees it."""

    tenant = InvitationTenantSerializer(read_only=True)
    state = serializers.ChoiceField(source="current_state", read_only=True,
                                    choices=INVITATION_STATES)
    invited_by = serializers.CharField(source="inviter.username", read_only=True,
                                       allow_null=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "tenant", "state", "role", "invited_by", "created_at", "expires_at",
                  "accepted_at"]
        read_only_fields = fields
