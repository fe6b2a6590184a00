from django.contrib import admin, messages

from hypervisors.admin import HostAdmin
from hypervisors.models import Host

from tenants.adminutils import AuditedAdmin, LimitedInlineFormSet, ReadOnlyAdmin
from .choices import POWER_OPERATIONS_FROM, OperationKind
from core.errors import ServiceError
from .models import Desktop, Image, Operation, Pool, PoolEntitlement
from .selectors import pool_list_for_user
from .services import (
    desktop_power,
    image_publish,
    image_save,
    pool_delete,
    pool_entitlements_changed,
    pool_save,
    pool_update,
)


@admin.register(Image)
class ImageAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["name", "version", "tenant", "os", "base_volume", "boot", "created_at"]
    list_filter = ["boot", "tenant"]
    search_fields = ["name", "base_volume"]
    actions = ["publish"]

    def save_model(self, request, obj, form, change):
        image_save(image=obj)

    @admin.action(description="Publish: roll pools on older versions onto this one")
    def publish(self, request, queryset):
        for image in queryset:
            pools = image_publish(image=image)
            self.message_user(request, f"{image.name} v{image.version}: {len(pools)} pool(s) "
                              "rolling onto it.", messages.SUCCESS)


class DesktopInline(admin.TabularInline):
    """A pool's desktops, read-only and at most ``LimitedInlineFormSet.max_shown`` of them
    (the Desktops list filters and acts on all)."""

    model = Desktop
    formset = LimitedInlineFormSet
    extra = 0
    max_num = 0
    fields = ["name", "state", "host", "assigned_user", "state_changed_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True
    verbose_name_plural = f"Desktops (the newest {LimitedInlineFormSet.max_shown})"


class EntitlementInline(admin.TabularInline):
    model = PoolEntitlement
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Pool)
class PoolAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["name", "tenant", "kind", "protocol", "image", "spares_ready",
                    "spares_stopped", "max_desktops", "desktops", "enabled", "deleting_since"]
    list_filter = ["kind", "protocol", "enabled", "tenant"]
    search_fields = ["name", "tenant__slug"]
    readonly_fields = ["deleting_since"]
    inlines = [EntitlementInline, DesktopInline]
    actions = ["enable", "disable"]

    def get_queryset(self, request):
        return pool_list_for_user(user=request.user, is_admin=True).select_related("tenant")

    @admin.display(description="Desktops (on image)")
    def desktops(self, pool):
        return f"{pool.desktop_count} ({pool.desktops_on_image_count})"

    @admin.display(description="Ready spares (wanted)", ordering="ready_count")
    def spares_ready(self, pool):
        return f"{pool.ready_count} ({pool.min_ready})"

    @admin.display(description="Stopped spares (wanted)", ordering="stopped_count")
    def spares_stopped(self, pool):
        return f"{pool.stopped_count} ({pool.min_stopped})"

    def _set_enabled(self, request, queryset, enabled: bool):
        done = 0
        for pool in queryset:
            try:
                pool_update(pool=pool, actor=request.user, enabled=enabled)
                done += 1
            except ServiceError as error:
                self.message_user(request, f"{pool.name}: {error.message}", messages.WARNING)
        if done:
            self.message_user(request, f"{done} pool(s) {'enabled' if enabled else 'disabled'}.",
                              messages.SUCCESS)

    @admin.action(description="Enable (accept Connect)")
    def enable(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable (keep the desktops, refuse Connect)")
    def disable(self, request, queryset):
        self._set_enabled(request, queryset, False)

    def save_model(self, request, obj, form, change):
        pool_save(pool=obj, actor=request.user, changed=form.changed_data)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if any(formset.has_changed() for formset in formsets):
            pool_entitlements_changed(pool=form.instance, actor=request.user)

    # Deleting drains the pool: sessions end, desktops go in the background, then the pool.
    # Its desktops are therefore not an obstacle, whatever the foreign key says.
    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, _protected = super().get_deleted_objects(objs, request)
        return deleted, counts, perms_needed, []

    def delete_model(self, request, obj):
        pool_delete(pool=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for pool in queryset:
            pool_delete(pool=pool, actor=request.user)


def _power_action(kind: str):
    def run(modeladmin, request, queryset):
        asked, refused = 0, []
        for desktop in queryset:
            try:
                desktop_power(desktop=desktop, kind=kind, actor=request.user)
                asked += 1
            except ServiceError as error:
                refused.append(f"{desktop.name}: {error.message}")
        if asked:
            modeladmin.message_user(request, f"{OperationKind(kind).label} asked for "
                                    f"{asked} desktop(s).", messages.SUCCESS)
        for reason in refused:
            modeladmin.message_user(request, reason, messages.WARNING)

    run.__name__ = kind
    return admin.action(description=f"{OperationKind(kind).label}")(run)


@admin.register(Desktop)
class DesktopAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["name", "tenant", "pool", "state", "host", "image", "assigned_user",
                    "state_changed_at", "last_error"]
    list_filter = ["state", "tenant", "host"]
    list_select_related = ["tenant", "pool", "host", "image", "assigned_user"]
    search_fields = ["name", "assigned_user__username", "pool__name"]
    # Who holds a desktop changes only through the broker (Connect, takeover, logoff), so the
    # holder rule holds; a reset releases a floating desktop.
    readonly_fields = ["state", "state_changed_at", "assigned_user", "needs_reset", "spice_port",
                       "spice_tls_port", "vnc_port", "volume_name", "last_error"]
    actions = [_power_action(kind) for kind in POWER_OPERATIONS_FROM]


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["id", "tenant", "kind", "state", "desktop", "actor", "attempts",
                    "created_at", "finished_at", "short_error"]
    list_filter = ["state", "kind", "tenant"]
    list_select_related = ["tenant", "desktop", "actor"]
    search_fields = ["desktop__name", "error"]
    date_hierarchy = "created_at"

    @admin.display(description="Error")
    def short_error(self, operation):
        return operation.error[:120]


@admin.register(PoolEntitlement)
class PoolEntitlementAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["pool", "user", "tenant"]
    list_filter = ["tenant"]
    search_fields = ["pool__name", "user__username"]
    autocomplete_fields = ["user"]

    # A user taken off a pool loses its sessions there (and one moved to another pool too).
    def save_model(self, request, obj, form, change):
        previous = PoolEntitlement._base_manager.filter(pk=obj.pk).values_list(
            "pool_id", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        for pool in Pool._base_manager.filter(pk__in={previous, obj.pool_id} - {None}):
            pool_entitlements_changed(pool=pool, actor=request.user)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        pool_entitlements_changed(pool=obj.pool, actor=request.user)


class HostDesktopInline(DesktopInline):
    """The host's desktops (read-only, the newest ones): which tenant and pool each serves."""

    fk_name = "host"
    fields = ["name", "tenant", "pool", "state", "assigned_user", "state_changed_at"]
    readonly_fields = fields


class HostWithDesktopsAdmin(HostAdmin):
    """Hosts, with the desktops on each: the hosts layer knows no desktop, so its admin page
    is extended from here."""

    inlines = [*HostAdmin.inlines, HostDesktopInline]


admin.site.unregister(Host)
admin.site.register(Host, HostWithDesktopsAdmin)
