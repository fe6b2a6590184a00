from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "brokers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from hypervisors import events as host_events
        from tenants import events as tenant_events
        from vdi import events as vdi_events

        from . import receivers

        connections = [
            (tenant_events.membership_removed, receivers.on_membership_removed),
            (tenant_events.tenant_suspended, receivers.on_tenant_suspended),
            (tenant_events.quota_usage_requested, receivers.quota_usage),
            (host_events.domain_event, receivers.on_domain_event),
            (vdi_events.pool_access_changed, receivers.on_pool_access_changed),
            (vdi_events.desktop_power_requested, receivers.on_desktop_power_requested),
            (vdi_events.desktop_running, receivers.on_desktop_running),
            (vdi_events.desktop_lost, receivers.on_desktop_lost),
            (vdi_events.desktop_failed, receivers.on_desktop_failed),
        ]
        for signal, receiver in connections:
            signal.connect(receiver, dispatch_uid=f"brokers.{receiver.__name__}")
