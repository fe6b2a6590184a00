from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The framework-level kit every app builds on; it knows no domain."""

    name = "core"
    default_auto_field = "django.db.models.BigAutoField"
