from django.apps import AppConfig


class VdiConfig(AppConfig):
    verbose_name = "Desktops"
    name = "vdi"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from hypervisors import events as host_events
        from tenants import events as tenant_events

        from . import receivers

        tenant_events.tenant_egress_changed.connect(receivers.on_tenant_egress_changed,
                                                    dispatch_uid="vdi.tenant_egress_changed")
        host_events.host_unreachable.connect(receivers.on_host_unreachable,
                                             dispatch_uid="vdi.host_unreachable")
        host_events.host_domains_listed.connect(receivers.on_host_domains_listed,
                                                dispatch_uid="vdi.host_domains_listed")
        host_events.domain_event.connect(receivers.on_domain_event,
                                         dispatch_uid="vdi.domain_event")
        host_events.host_usage_requested.connect(receivers.host_usage,
                                                 dispatch_uid="vdi.host_usage")
        host_events.placement_backlog_requested.connect(receivers.placement_backlog,
                                                        dispatch_uid="vdi.placement_backlog")
        tenant_events.audit_details_requested.connect(receivers.audit_details,
                                                      dispatch_uid="vdi.audit_details")
        tenant_events.quota_usage_requested.connect(receivers.quota_usage,
                                                    dispatch_uid="vdi.quota_usage")
