from django.apps import AppConfig


class VdiConfig(AppConfig):
    verbose_name = "Desktops"
    name = "vdi"
    default_auto_field = "django.db.models.BigAutoField"
