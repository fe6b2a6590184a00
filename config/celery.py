import os

from celery import Celery
from celery.signals import (after_setup_logger, after_setup_task_logger, before_task_publish,
                            task_postrun, task_prerun)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("vdi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_json(logger, **_kwargs):
    """Workers and beat set up their own log handlers: with LOG_FORMAT=json they write the
    same JSON lines as the web processes (a task's lines carry its id as request_id)."""
    from django.conf import settings

    if settings.LOG_FORMAT == "json":
        from core.logformat import JsonFormatter

        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


@before_task_publish.connect
def _carry_request_id(headers=None, **_kwargs):
    """A task carries the id of the web request that caused it (through any tasks in
    between): workers log it as ``origin_request_id`` beside their own task id."""
    from core import context
    from core.logformat import origin_request_id

    origin = origin_request_id() or context.current().request_id
    if origin and headers is not None:
        headers.setdefault("origin_request_id", origin)


@task_prerun.connect
@task_postrun.connect
def _keep_good_database_connections(sender=None, **_kwargs):
    """What Django does around each request, around each task: close a connection that is
    broken or older than CONN_MAX_AGE, keep a good one (health-checked on its next use).

    Celery's own Django fix-up would close every connection around every task, so each task
    paid for a new PostgreSQL backend (docs/benchmarks.md); CELERY_DB_REUSE_MAX in the
    settings turns that off. A task run in-process (eager: tests, the shell) shares its
    caller's connection and transaction, which are left alone."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
