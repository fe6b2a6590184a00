from importlib import import_module

from django.apps import AppConfig, apps
from django.utils.module_loading import module_has_submodule


class ConfigConfig(AppConfig):
    """The project package: settings, URLs, the Celery app, and what spans every app (the
    dashboard, health, metrics, the demo seed). It may import any app; none imports it."""

    name = "config"
    verbose_name = "Project"

    def ready(self):
        # Services send their tasks by name (core.taskutils.task_named): every process, the
        # web's too, registers every app's tasks once at start-up, as the worker does.
        for app in apps.get_app_configs():
            if module_has_submodule(app.module, "tasks"):
                import_module(f"{app.name}.tasks")
