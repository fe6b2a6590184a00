from rest_framework import serializers

from hypervisors.models import Host


class HostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = ["id", "name", "uri", "virt_type", "console_address", "enabled", "state",
                  "cpus", "memory_mb", "cpu_overcommit", "memory_overcommit",
                  "max_concurrent_boots", "storage_pool", "network", "last_seen_at",
                  "last_error", "created_at"]
        read_only_fields = ["id", "state", "cpus", "memory_mb", "last_seen_at", "last_error",
                            "created_at"]
