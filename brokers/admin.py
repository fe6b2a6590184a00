from django.contrib import admin

from vdi.adminutils import ReadOnlyAdmin

from .models import ConnectionTicket, Session


class TicketInline(admin.TabularInline):
    model = ConnectionTicket
    extra = 0
    fields = ["kind", "protocol", "host", "port", "password_applied", "created_at",
              "expires_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "pool", "user", "desktop", "state", "end_reason",
                    "created_at", "ended_at"]
    list_filter = ["state", "end_reason", "tenant"]
    search_fields = ["user__username", "desktop__name"]
    inlines = [TicketInline]


@admin.register(ConnectionTicket)
class ConnectionTicketAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["id", "tenant", "session", "kind", "protocol", "password_applied",
                    "created_at", "expires_at", "used_at"]
    list_filter = ["kind", "protocol", "password_applied"]
    exclude = ["token_hash"]
