"""Pieces shared by the apps' Django admin modules."""

from __future__ import annotations


class ReadOnlyAdmin:
    """For records the system writes (operations, tickets, audit, usage): operators look,
    never add or edit. ``deletable`` False for append-only ones."""

    deletable = True

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.deletable and super().has_delete_permission(request, obj)
