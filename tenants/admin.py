from django.contrib import admin

from vdi.adminutils import AuditedAdmin, ReadOnlyAdmin

from .choices import TenantStatus
from .models import AuditEvent, Membership, MonthlyUsage, Tenant, UsageEvent
from .services import tenant_set_status


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["slug", "name", "status", "max_desktops", "max_vcpus", "max_memory_mb",
                    "max_sessions", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    readonly_fields = ["status"]
    actions = ["suspend", "resume"]

    @admin.action(description="Suspend (end their sessions, no connect or provisioning)")
    def suspend(self, request, queryset):
        for tenant in queryset:
            tenant_set_status(tenant=tenant, status=TenantStatus.SUSPENDED, actor=request.user)
        self.message_user(request, f"{queryset.count()} organisation(s) suspended.")

    @admin.action(description="Resume")
    def resume(self, request, queryset):
        for tenant in queryset:
            tenant_set_status(tenant=tenant, status=TenantStatus.ACTIVE, actor=request.user)
        self.message_user(request, f"{queryset.count()} organisation(s) resumed.")


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every tenant's trail and the platform's own entries (no tenant: hosts, public images,
    tokens), which only staff see."""

    deletable = False  # append-only
    list_display = ["created_at", "tenant", "actor_name", "action", "result", "object_type",
                    "object_id", "source", "source_ip", "request_id"]
    list_filter = ["result", "source", "action", "tenant"]  # tenant "-": platform entries
    search_fields = ["action", "object_id", "actor_name", "request_id"]
    readonly_fields = list_display + ["actor", "details"]


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every tenant's usage by month, as the beat last computed it (operator-wide view)."""

    list_display = ["month", "tenant", "desktop_hours", "session_hours", "vcpu_hours",
                    "memory_gb_hours", "peak_sessions", "computed_at"]
    list_filter = ["month", "tenant"]
    readonly_fields = list_display


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    deletable = False  # append-only
    list_display = ["at", "tenant", "subject", "subject_id", "state", "active", "vcpus",
                    "memory_mb"]
    list_filter = ["subject", "active", "tenant"]
    search_fields = ["subject_id"]
