from rest_framework import serializers

from tenants.models import Tenant


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "status", "max_desktops", "max_vcpus", "max_memory_mb",
                  "max_sessions", "created_at"]
        read_only_fields = ["id", "created_at"]
