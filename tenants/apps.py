from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # API tokens: every knox token gets its record, a new password revokes them all.
        from . import tokens

        tokens.connect_receivers()
