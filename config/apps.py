from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """The project package: settings, URLs, the Celery app, and what spans every app (the
    dashboard, health, metrics, the demo seed). It may import any app; none imports it."""

    name = "config"
    verbose_name = "Project"
