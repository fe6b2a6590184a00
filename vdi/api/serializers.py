from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from vdi.disclosure import desktop_error_for, operation_error_for, pool_provisioning_problem
from vdi.models import Desktop, Image, Operation, Pool

from core.api.fields import ScopedPrimaryKeyRelatedField


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


def _reader(serializer):
    """The user the answer is for (none outside a request: then nobody is staff)."""
    request = serializer.context.get("request")
    return getattr(request, "user", None)


class ProvisioningErrorSerializer(serializers.Serializer):
    message = serializers.CharField(
        help_text="The last failure: libvirt's words for platform staff, a plain sentence "
                  "for everyone else.")
    since = serializers.DateTimeField(help_text="When the first of these failures happened.")
    failures = serializers.IntegerField(
        help_text="Provisions and resets of the pool that failed since the last success.")


class PoolSerializer(serializers.ModelSerializer):
    image = ScopedPrimaryKeyRelatedField(Image, pk_field=serializers.UUIDField())
    desktop_count = serializers.IntegerField(read_only=True, default=None, allow_null=True)
    desktops_on_image = serializers.IntegerField(
        source="desktops_on_image_count", read_only=True, default=None, allow_null=True,
        help_text="Desktops already on the pool's image: the progress of a roll-out.")
    provisioning_error = serializers.SerializerMethodField(
        help_text="Set while the pool's provisioning keeps failing (its provisions and resets "
                  "failed with no success since), so the pool cannot fill up; null otherwise.")

    class Meta:
        model = Pool
        fields = ["id", "name", "description", "image", "kind", "protocol", "vcpus",
                  "memory_mb", "min_ready", "min_stopped", "max_desktops", "max_per_user",
                  "idle_timeout_s", "max_session_s", "on_logoff", "ticket_ttl_s",
                  "entitle_all_members", "enabled", "deleting_since", "desktop_count",
                  "desktops_on_image", "provisioning_error", "created_at"]
        read_only_fields = ["id", "deleting_since", "created_at"]
        # Uniqueness per tenant is checked by the model (the tenant is not a field here).
        validators = []

    @extend_schema_field(ProvisioningErrorSerializer(allow_null=True))
    def get_provisioning_error(self, pool) -> dict | None:
        # Counted by pool_list_for_user; a pool just written has nothing to tell yet.
        problem = pool_provisioning_problem(pool, user=_reader(self))
        return None if problem is None else ProvisioningErrorSerializer(problem).data


class DesktopSerializer(serializers.ModelSerializer):
    assigned_user = serializers.SlugRelatedField(slug_field="username", read_only=True,
                                                 allow_null=True)
    host = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = Desktop
        fields = ["id", "name", "pool", "image", "host", "state", "state_changed_at",
                  "assigned_user", "vcpus", "memory_mb", "last_error", "created_at"]
        read_only_fields = fields
        extra_kwargs = {"last_error": {"help_text": "What went wrong: libvirt's words for "
                                                    "platform staff, a plain sentence for "
                                                    "everyone else."}}

    def to_representation(self, desktop):
        data = super().to_representation(desktop)
        data["last_error"] = desktop_error_for(state=desktop.state, error=desktop.last_error,
                                               user=_reader(self))
        return data


class OperationSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Operation
        fields = ["id", "kind", "state", "desktop", "pool", "actor", "attempts", "error",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields
        extra_kwargs = {"error": {"help_text": "Why it failed: libvirt's words for platform "
                                               "staff, a plain sentence for everyone else."}}

    def to_representation(self, operation):
        data = super().to_representation(operation)
        data["error"] = operation_error_for(kind=operation.kind, error=operation.error,
                                            user=_reader(self))
        return data


