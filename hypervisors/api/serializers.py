from rest_framework import serializers

from hypervisors.models import Host


class HostSerializer(serializers.ModelSerializer):
    used_vcpus = serializers.IntegerField(read_only=True, default=None)
    used_memory_mb = serializers.IntegerField(source="used_memory", read_only=True, default=None)
    desktop_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Host
        fields = ["id", "name", "uri", "virt_type", "console_address",
                  "vnc_listen_address", "enabled", "state",
                  "cpus", "memory_mb", "cpu_overcommit", "memory_overcommit",
                  "max_concurrent_boots", "storage_pool", "network_mode", "egress", "bridge",
                  "vlan_range",
                  "console_tls_subject", "console_ca_cert", "virt_types",
                  "storage_free_gb", "volumes", "unknown_domains", "used_vcpus",
                  "used_memory_mb", "desktop_count", "failures", "last_seen_at",
                  "last_checked_at", "last_error", "created_at"]
        read_only_fields = ["id", "state", "cpus", "memory_mb", "virt_types", "storage_free_gb",
                            "volumes", "unknown_domains", "failures", "last_seen_at",
                            "last_checked_at", "last_error", "created_at"]
