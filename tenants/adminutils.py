"""Pieces shared by the apps' Django admin modules."""

from __future__ import annotations

from django.forms.models import BaseInlineFormSet

from tenants.audit import audit_record, audited
from tenants.models import Tenant


def _tenant_of(obj) -> Tenant | None:
    """The tenant whose trail an admin change goes into; None for platform objects."""
    if isinstance(obj, Tenant):  # only once saved, and no longer once deleted
        return None if obj._state.adding or obj.pk is None else obj
    return getattr(obj, "tenant", None)


def _admin_audited(obj, verb: str, request, **details):
    return audited(action=f"{obj._meta.model_name}.{verb}", tenant=_tenant_of(obj),
                   target=obj, actor=request.user, details={"object": str(obj), **details})


class AuditedAdmin:
    """For admin pages that save or delete rows themselves rather than through a service
    (services audit on their own): every save, inline change and deletion is audited, one
    entry per object, with source ``admin``. A class's own ``save_model`` or
    ``delete_model`` that calls a service takes precedence."""

    def save_model(self, request, obj, form, change):
        with _admin_audited(obj, "update" if change else "create", request,
                            changed=form.changed_data) as audit:
            super().save_model(request, obj, form, change)
            audit.tenant = _tenant_of(obj)  # a new tenant exists now

    def delete_model(self, request, obj):
        with _admin_audited(obj, "delete", request) as audit:
            super().delete_model(request, obj)
            audit.tenant = _tenant_of(obj)  # a deleted tenant's entry is the platform's

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)

    def save_formset(self, request, form, formset, change):
        deleting = [(f.instance, f.instance.pk) for f in formset.deleted_forms if f.instance.pk]
        super().save_formset(request, form, formset, change)
        done = [("create", obj, obj.pk) for obj in formset.new_objects]
        done += [("update", obj, obj.pk) for obj, _fields in formset.changed_objects]
        done += [("delete", obj, pk) for obj, pk in deleting]
        for verb, obj, pk in done:
            audit_record(tenant=_tenant_of(obj), action=f"{obj._meta.model_name}.{verb}",
                         target=obj, object_id=pk, actor=request.user,
                         details={"object": str(obj)})


class ReadOnlyAdmin(AuditedAdmin):
    """For records the system writes (operations, tickets, audit, usage): operators look,
    never add or edit; a deletion is audited. ``deletable`` False for append-only ones."""

    deletable = True

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.deletable and super().has_delete_permission(request, obj)


class LimitedInlineFormSet(BaseInlineFormSet):
    """An inline that shows at most ``max_shown`` rows (the newest first): a pool or a host
    may have thousands of desktops, and the change page is not where to list them all."""

    max_shown = 50

    def get_queryset(self):
        if not hasattr(self, "_limited"):
            self._limited = super().get_queryset().order_by("-created_at")[:self.max_shown]
        return self._limited
