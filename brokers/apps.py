from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tenants import events as tenant_events
        from vdi import events as vdi_events

        from . import receivers

        tenant_events.membership_removed.connect(receivers.on_membership_removed,
                                                 dispatch_uid="brokers.membership_removed")
        tenant_events.tenant_suspended.connect(receivers.on_tenant_suspended,
                                               dispatch_uid="brokers.tenant_suspended")
        vdi_events.pool_access_changed.connect(receivers.on_pool_access_changed,
                                               dispatch_uid="brokers.pool_access_changed")
        vdi_events.desktop_power_requested.connect(receivers.on_desktop_power_requested,
                                                   dispatch_uid="brokers.desktop_power")
