from django.contrib import admin, messages

from tenants.adminutils import AuditedAdmin, ReadOnlyAdmin

from .choices import LIVE_SESSION_STATES, EndReason
from .models import ConnectionTicket, Session
from .services import session_end


class TicketInline(admin.TabularInline):
    model = ConnectionTicket
    extra = 0
    fields = ["kind", "protocol", "host", "port", "password_applied", "created_at",
              "expires_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Session)
class SessionAdmin(AuditedAdmin, admin.ModelAdmin):
    list_display = ["id", "tenant", "pool", "user", "desktop", "state", "end_reason",
                    "created_at", "ended_at"]
    list_filter = ["state", "end_reason", "tenant"]
    list_select_related = ["tenant", "pool", "user", "desktop"]
    search_fields = ["user__username", "desktop__name"]
    inlines = [TicketInline]
    actions = ["end"]

    @admin.action(description="End (reason: admin; the pool's on_logoff applies)")
    def end(self, request, queryset):
        live = [session for session in queryset if session.state in LIVE_SESSION_STATES]
        for session in live:
            session_end(session=session, actor=request.user, reason=EndReason.ADMIN)
        self.message_user(request, f"{len(live)} session(s) ended.", messages.SUCCESS)


@admin.register(ConnectionTicket)
class ConnectionTicketAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["id", "tenant", "session", "kind", "protocol", "password_applied",
                    "created_at", "expires_at", "used_at"]
    list_filter = ["kind", "protocol", "password_applied"]
    exclude = ["token_hash"]
