"""Portal forms. Presentation only: what a pool may be is decided by the model and the
services (``vdi/services.py``), whose errors the views put back on these forms."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from core.limits import TICKET_TTL_MAX_S, TICKET_TTL_MIN_S
from .models import Image, Pool
from .selectors import image_list_available


class PoolForm(forms.ModelForm):
    """A pool's user-editable fields. Build it inside the tenant's scope: the image choices
    are the images that tenant may use (its own and the public ones)."""

    # (legend, fields): how the page groups the fields.
    FIELDSETS = [
        ("Pool", ["name", "description", "enabled"]),
        ("Desktops", ["image", "kind", "protocol", "vcpus", "memory_mb"]),
        ("Spares and size", ["min_ready", "min_stopped", "max_desktops", "max_per_user"]),
        ("Sessions", ["on_logoff", "idle_timeout_s", "max_session_s", "ticket_ttl_s"]),
        ("Who may use it", ["entitle_all_members"]),
    ]

    # The choices are set per request (in the tenant's scope); the scoped default manager
    # cannot even be asked for a queryset when this class is defined.
    image = forms.ModelChoiceField(
        queryset=Image._base_manager.none(), empty_label="Choose an image",
        help_text="The golden image the pool's desktops are made from.",
    )

    class Meta:
        model = Pool
        fields = [
            "name", "description", "image", "kind", "protocol", "vcpus", "memory_mb",
            "min_ready", "min_stopped", "max_desktops", "max_per_user", "idle_timeout_s",
            "max_session_s", "on_logoff", "ticket_ttl_s", "entitle_all_members", "enabled",
        ]
        labels = {
            "vcpus": "vCPUs",
            "memory_mb": "Memory (MiB)",
            "min_ready": "Running spares (min_ready)",
            "min_stopped": "Stopped spares (min_stopped)",
            "max_desktops": "Maximum desktops",
            "max_per_user": "Desktops per user",
            "idle_timeout_s": "Idle timeout (seconds)",
            "max_session_s": "Maximum session length (seconds)",
            "on_logoff": "At logoff",
            "ticket_ttl_s": "Console ticket lifetime (seconds)",
            "entitle_all_members": "Every member of the organisation may use this pool",
            "enabled": "Enabled (accepts Connect)",
        }
        help_texts = {
            "description": "Shown to users on their dashboard.",
            "kind": "Floating: any free desktop, possibly another one next time. "
                    "Dedicated: the first Connect assigns a desktop to the user for good.",
            "min_ready": "Desktops kept running and unassigned, so Connect is instant.",
            "min_stopped": "Desktops kept defined but stopped: a Connect starts one in "
                           "seconds, and they use no memory or CPU meanwhile.",
            "max_desktops": "Spares and desktops in use together; at least running + "
                            "stopped spares.",
            "max_per_user": "How many desktops of this pool one user may hold.",
            "idle_timeout_s": "Empty: no limit.",
            "max_session_s": "Empty: no limit.",
            "on_logoff": "Floating pools only; dedicated desktops are never recycled.",
            "ticket_ttl_s": f"{TICKET_TTL_MIN_S} to {TICKET_TTL_MAX_S}; empty for the platform "
                            f"default.",
            "entitle_all_members": "Switch off to allow only listed users.",
            "enabled": "A disabled pool keeps its desktops but accepts no Connect.",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = image_list_available()
        self.fields["max_desktops"].help_text += (
            f" The platform allows at most {settings.VDI['POOL_MAX_DESKTOPS']}.")

    def fieldsets(self):
        """[(legend, [bound fields])] for the template."""
        return [(legend, [self[name] for name in names]) for legend, names in self.FIELDSETS]

    def add_service_errors(self, error: ValidationError) -> None:
        """Show a ValidationError raised by a service (the model's ``full_clean``) on the
        form: next to the field it names, otherwise at the top. A uniqueness error on a tenant
        and a field goes next to that field."""
        errors = error.error_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: [error]}
        for name, field_errors in errors.items():
            for field_error in field_errors:
                if name in self.fields:
                    self.add_error(name, field_error)
                elif unique_field := self._unique_field(field_error):
                    label = self.fields[unique_field].label.lower()
                    self.add_error(unique_field, ValidationError(
                        f"This organisation already has a {self._meta.model._meta.verbose_name} "
                        f"with this {label}.", code="unique"))
                else:
                    self.add_error(None, field_error)

    def _unique_field(self, error: ValidationError) -> str | None:
        """The one form field of a failed (tenant, field) uniqueness check, if it is that."""
        params = getattr(error, "params", None) or {}
        if getattr(error, "code", None) not in ("unique", "unique_together"):
            return None
        on_form = [name for name in params.get("unique_check", ()) if name in self.fields]
        return on_form[0] if len(on_form) == 1 else None
