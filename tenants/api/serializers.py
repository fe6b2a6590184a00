from rest_framework import serializers

from tenants.choices import Role
from tenants.models import Membership, Tenant


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "status", "max_desktops", "max_vcpus", "max_memory_mb",
                  "max_sessions", "created_at"]
        read_only_fields = ["id", "created_at"]


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(serializers.Serializer):
    """Exactly one of ``username`` (an existing user) and ``email`` (an invitation)."""

    username = serializers.CharField(
        max_length=150, required=False,
        help_text="Add this existing user.")
    email = serializers.EmailField(
        max_length=254, required=False,
        help_text="Invite this address: an existing user with it is added, else an account "
                  "is created and a one-time set-password link is e-mailed.")
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
