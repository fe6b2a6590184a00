from django.contrib import admin, messages
from django.utils.html import format_html

from tenants.adminutils import AuditedAdmin, ReadOnlyAdmin

from .models import Host, HostNetwork, TenantSegment
from .services import (
    host_activate,
    host_drain,
    host_refresh,
    host_save,
    host_set_enabled,
    host_usage,
)


def _usage_bar(used: int, capacity: int, unit: str = ""):
    """A bar of what desktops commit against what the host offers after overcommit."""
    return format_html(
        '<meter min="0" max="{}" value="{}" high="{}"></meter> {}/{}{}',
        max(capacity, 1), used, 0.9 * max(capacity, 1), used, capacity, unit,
    )


def _run_on_hosts(service, done: str):
    def run(modeladmin, request, queryset):
        for host in queryset:
            service(host=host)
        modeladmin.message_user(request, f"{queryset.count()} host(s) {done}.", messages.SUCCESS)

    return run


class HostNetworkInline(admin.TabularInline):
    """The tenants' networks on this host (read-only: made and removed with desktops)."""

    model = HostNetwork
    fields = ["name", "tenant", "kind", "subnet", "vlan", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Host)
class HostAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["name", "state", "enabled", "vcpus_in_use", "memory_in_use", "desktop_count",
                    "virt_type", "uri", "last_seen_at", "problem"]
    list_filter = ["state", "enabled", "virt_type"]
    search_fields = ["name", "uri", "console_address", "vnc_listen_address"]
    fieldsets = [
        (None, {"fields": ["name", "uri", "virt_type", "enabled", "storage_pool",
                           "cpu_overcommit", "memory_overcommit", "max_concurrent_boots"]}),
        ("Tenant networks", {
            "fields": ["network_mode", "egress", "bridge", "vlan_range"],
            "description": "Every tenant's desktops get a network of their own on this host, "
                           "with traffic filters on every interface (docs/hosts.md).",
        }),
        ("Consoles", {
            "fields": ["console_address", "vnc_listen_address", "console_tls_subject",
                       "console_ca_cert"],
            "description": "Console clients dial the console address (SPICE, .vv files). "
                           "VNC displays listen on the VNC listen address only, which only "
                           "the console proxies should reach: browsers get VNC through them, "
                           "and a proxy cuts a console the moment its session ends.",
        }),
        ("Discovered", {"fields": ["state", "cpus", "memory_mb", "virt_types",
                                   "storage_free_gb", "volumes", "unknown_domains", "failures",
                                   "last_seen_at", "last_checked_at", "last_error"]}),
    ]
    readonly_fields = ["state", "cpus", "memory_mb", "virt_types", "storage_free_gb", "volumes",
                       "unknown_domains", "failures", "last_seen_at", "last_checked_at",
                       "last_error"]
    actions = ["drain", "activate", "enable", "disable", "refresh"]
    inlines = [HostNetworkInline]  # the desktops layer adds the host's desktops

    def get_queryset(self, request):
        return host_usage()

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new host has no desktops

    def save_model(self, request, obj, form, change):
        host_save(host=obj)

    @admin.display(description="vCPUs committed", ordering="used_vcpus")
    def vcpus_in_use(self, host):
        return _usage_bar(host.used_vcpus, host.vcpu_capacity)

    @admin.display(description="Memory committed", ordering="used_memory")
    def memory_in_use(self, host):
        return _usage_bar(host.used_memory // 1024, host.memory_capacity_mb // 1024, " GiB")

    @admin.display(description="Desktops", ordering="desktop_count")
    def desktop_count(self, host):
        return host.desktop_count

    @admin.display(description="Last error")
    def problem(self, host):
        return host.last_error[:120]

    drain = admin.action(description="Drain (maintenance: no new work)")(
        _run_on_hosts(host_drain, "drained"))
    activate = admin.action(description="Leave maintenance / retry now")(
        _run_on_hosts(host_activate, "being checked"))
    enable = admin.action(description="Enable")(
        _run_on_hosts(lambda host: host_set_enabled(host=host, enabled=True), "enabled"))
    disable = admin.action(description="Disable")(
        _run_on_hosts(lambda host: host_set_enabled(host=host, enabled=False), "disabled"))
    refresh = admin.action(description="Reconcile now (check the host, compare its domains)")(
        _run_on_hosts(host_refresh, "being checked"))


@admin.register(HostNetwork)
class HostNetworkAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every tenant network on every host: made and removed with the desktops, never here."""

    list_display = ["name", "host", "tenant", "kind", "subnet", "vlan", "created_at"]
    list_filter = ["kind", "host"]
    search_fields = ["name", "tenant__slug", "host__name"]


@admin.register(TenantSegment)
class TenantSegmentAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Each tenant's number on the wire: its subnet and VLAN tag derive from it."""

    list_display = ["tenant", "number", "created_at"]
    search_fields = ["tenant__slug"]
