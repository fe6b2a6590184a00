from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from core import events as core_events

        from . import receivers, tokens

        core_events.api_request_refused.connect(receivers.on_api_request_refused,
                                                dispatch_uid="tenants.api_request_refused")
        core_events.log_context_requested.connect(receivers.log_context,
                                                  dispatch_uid="tenants.log_context")
        # API tokens: every knox token gets its record, a new password revokes them all.
        tokens.connect_receivers()
