from rest_framework import serializers

from brokers.choices import EndReason

from brokers.models import Session


class SessionSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    end_reason = serializers.ChoiceField(
        choices=EndReason.choices, allow_blank=True, read_only=True,
        help_text="Why the session ended; empty while it is live.")

    class Meta:
        model = Session
        fields = ["id", "pool", "desktop", "user", "state", "end_reason", "operation",
                  "created_at", "ready_at", "connected_at", "ended_at"]
        read_only_fields = fields


class TicketSerializer(serializers.Serializer):
    """A ready console ticket (SPEC §4). The password is shown once and never stored."""

    session = serializers.UUIDField()
    desktop = serializers.UUIDField()
    state = serializers.ChoiceField(choices=["ready"])
    protocol = serializers.ChoiceField(choices=["spice", "vnc"])
    host = serializers.CharField()
    port = serializers.IntegerField(allow_null=True)
    tls_port = serializers.IntegerField(allow_null=True)
    password = serializers.CharField()
    expires_at = serializers.DateTimeField()
    vv_url = serializers.URLField()
    console_url = serializers.URLField()
    password_applied = serializers.BooleanField(
        help_text="False on a simulated host, where no console password can be set."
    )
    notice = serializers.CharField(allow_blank=True)


class PendingSerializer(serializers.Serializer):
    session = serializers.UUIDField()
    state = serializers.ChoiceField(choices=["pending", "ready"])
    retry_after = serializers.IntegerField()
    operation = serializers.UUIDField(allow_null=True)
