from django.contrib import admin

from .models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "uri", "virt_type", "state", "enabled", "cpus", "memory_mb",
                    "console_address", "last_seen_at"]
    list_filter = ["state", "enabled", "virt_type"]
    search_fields = ["name", "uri", "console_address"]
    readonly_fields = ["state", "cpus", "memory_mb", "last_seen_at", "last_error"]
