from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied

from tenants.adminutils import AuditedAdmin, ReadOnlyAdmin
from core.errors import ServiceError
from core.models import IdempotentRequest

from .choices import TenantStatus
from .models import AuditEvent, Invitation, Membership, MonthlyUsage, Tenant, UsageEvent
from .members import invitation_revoke, membership_remove
from .services import tenant_set_status
from .tokens import ApiToken, RevokeReason, api_token_revoke


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    # Removing someone is the membership page's Delete: it goes through membership_remove,
    # so the last-owner rule holds and their sessions end.
    can_delete = False


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["slug", "name", "status", "max_desktops", "max_vcpus", "max_memory_mb",
                    "max_sessions", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    # Changed through their services (the API), which act on them: suspension, egress.
    readonly_fields = ["status", "desktop_egress"]
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

    def delete_model(self, request, obj):
        """Through the service, as in the portal and the API: the last owner stays, and the
        person's access ends."""
        try:
            membership_remove(membership=obj, actor=request.user)
        except ServiceError as error:
            raise PermissionDenied(error.message) from None

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            try:
                membership_remove(membership=obj, actor=request.user)
            except ServiceError as error:
                self.message_user(request, f"{obj}: {error.message}", messages.ERROR)


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every organisation's invitations, with the account each one reached (``user``), which
    the organisation's own admins are never shown."""

    deletable = False  # revoke instead: the organisation's trail refers to it
    list_display = ["created_at", "tenant", "username", "email", "user", "role", "state",
                    "inviter", "expires_at", "accepted_at"]
    list_filter = ["state", "role", "tenant"]
    search_fields = ["username", "email", "user__username", "tenant__slug"]
    exclude = ["token_hash"]
    readonly_fields = list_display
    actions = ["revoke"]

    @admin.action(description="Revoke (its link stops working)")
    def revoke(self, request, queryset):
        revoked = 0
        for invitation in queryset:
            try:
                invitation_revoke(invitation=invitation, actor=request.user)
            except ServiceError as error:
                self.message_user(request, f"{invitation}: {error.message}", messages.ERROR)
            else:
                revoked += 1
        self.message_user(request, f"{revoked} invitation(s) revoked.")


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


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Every user's API tokens, without their keys; deleting one revokes it (audited)."""

    list_display = ["name", "user", "created", "last_used_at", "expiry"]
    list_select_related = ["token__user"]
    search_fields = ["name", "token__user__username"]
    readonly_fields = ["id", "name", "user", "created", "last_used_at", "expiry"]
    exclude = ["token"]

    @admin.display(ordering="token__user__username")
    def user(self, obj):
        return obj.token.user

    @admin.display(ordering="token__created")
    def created(self, obj):
        return obj.token.created

    @admin.display(ordering="token__expiry")
    def expiry(self, obj):
        return obj.token.expiry

    def delete_model(self, request, obj):
        api_token_revoke(token=obj, actor=request.user, reason=RevokeReason.ADMIN)


@admin.register(IdempotentRequest)
class IdempotentRequestAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["key", "user", "status_code", "created_at"]
    search_fields = ["key", "user__username"]
    readonly_fields = ["user", "key", "fingerprint", "status_code", "response", "headers",
                       "created_at"]
