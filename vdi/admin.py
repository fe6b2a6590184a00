from django.contrib import admin

from .models import Desktop, IdempotentRequest, Image, Operation, Pool, PoolEntitlement


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "tenant", "os", "base_volume", "boot", "created_at"]
    list_filter = ["boot", "tenant"]
    search_fields = ["name", "base_volume"]


class DesktopInline(admin.TabularInline):
    model = Desktop
    extra = 0
    fields = ["name", "state", "host", "assigned_user"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


class EntitlementInline(admin.TabularInline):
    model = PoolEntitlement
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "kind", "protocol", "image", "min_ready", "min_stopped",
                    "max_desktops", "enabled"]
    list_filter = ["kind", "protocol", "enabled", "tenant"]
    search_fields = ["name"]
    inlines = [EntitlementInline, DesktopInline]


@admin.register(Desktop)
class DesktopAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "pool", "state", "host", "assigned_user",
                    "state_changed_at"]
    list_filter = ["state", "tenant", "host"]
    search_fields = ["name", "assigned_user__username"]
    readonly_fields = ["state", "state_changed_at", "spice_port", "spice_tls_port", "vnc_port",
                       "volume_name", "last_error"]


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "kind", "state", "desktop", "actor", "attempts",
                    "created_at", "finished_at"]
    list_filter = ["state", "kind", "tenant"]
    search_fields = ["desktop__name", "error"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PoolEntitlement)
class PoolEntitlementAdmin(admin.ModelAdmin):
    list_display = ["pool", "user", "tenant"]
    list_filter = ["tenant"]
    search_fields = ["pool__name", "user__username"]
    autocomplete_fields = ["user"]


@admin.register(IdempotentRequest)
class IdempotentRequestAdmin(admin.ModelAdmin):
    list_display = ["key", "user", "status_code", "created_at"]
    search_fields = ["key", "user__username"]
    readonly_fields = ["user", "key", "fingerprint", "status_code", "response", "headers",
                       "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
