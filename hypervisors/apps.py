from django.apps import AppConfig


class HypervisorsConfig(AppConfig):
    name = "hypervisors"
    default_auto_field = "django.db.models.BigAutoField"
