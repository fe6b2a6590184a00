from django.apps import AppConfig


class VdiConfig(AppConfig):
    verbose_name = "Desktops"
    name = "vdi"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tenants import events as tenant_events

        from . import receivers

        tenant_events.tenant_egress_changed.connect(receivers.on_tenant_egress_changed,
                                                    dispatch_uid="vdi.tenant_egress_changed")
