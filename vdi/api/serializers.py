from rest_framework import serializers

from vdi.models import Desktop, Image, Operation, Pool

from .fields import ScopedPrimaryKeyRelatedField


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["id", "tenant", "name", "version", "os", "base_volume", "disk_gb",
                  "default_vcpus", "default_memory_mb", "boot", "kernel", "initrd", "cmdline",
                  "created_at"]
        read_only_fields = ["id", "created_at"]
        # Uniqueness (per tenant, and among public images) is checked by the model.
        validators = []


class ImagePublishSerializer(serializers.Serializer):
    image = serializers.UUIDField()
    pools = serializers.ListField(child=serializers.UUIDField(),
                                  help_text="The pools rolled onto this image.")


class PoolSerializer(serializers.ModelSerializer):
    image = ScopedPrimaryKeyRelatedField(Image, pk_field=serializers.UUIDField())
    desktop_count = serializers.IntegerField(read_only=True, default=None, allow_null=True)
    desktops_on_image = serializers.IntegerField(
        source="desktops_on_image_count", read_only=True, default=None, allow_null=True,
        help_text="Desktops already on the pool's image: the progress of a roll-out.")

    class Meta:
        model = Pool
        fields = ["id", "name", "description", "image", "kind", "protocol", "vcpus",
                  "memory_mb", "min_ready", "min_stopped", "max_desktops", "max_per_user",
                  "idle_timeout_s", "max_session_s", "on_logoff", "ticket_ttl_s",
                  "entitle_all_members", "enabled", "deleting_since", "desktop_count",
                  "desktops_on_image", "created_at"]
        read_only_fields = ["id", "deleting_since", "created_at"]
        # Uniqueness per tenant is checked by the model (the tenant is not a field here).
        validators = []


class DesktopSerializer(serializers.ModelSerializer):
    assigned_user = serializers.SlugRelatedField(slug_field="username", read_only=True,
                                                 allow_null=True)
    host = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = Desktop
        fields = ["id", "name", "pool", "image", "host", "state", "state_changed_at",
                  "assigned_user", "vcpus", "memory_mb", "last_error", "created_at"]
        read_only_fields = fields


class OperationSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Operation
        fields = ["id", "kind", "state", "desktop", "pool", "actor", "attempts", "error",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields


