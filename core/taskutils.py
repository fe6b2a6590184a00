"""How tasks are declared and sent: stable names, ids only, a request context of their own,
enqueued after commit."""

from __future__ import annotations

import functools
import logging
from contextlib import nullcontext

from celery import current_app, current_task, shared_task
from django.db import transaction
from kombu.exceptions import OperationalError

from core.context import Source, boundary

logger = logging.getLogger(__name__)


def task(name: str, *, scope=nullcontext, **options):
    """A Celery task whose run is one request-context boundary (its id in every log line and
    audit entry), inside ``scope()`` (the tenancy layer passes its platform scope)."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            request_id = getattr(getattr(current_task, "request", None), "id", None)
            with scope(), boundary(source=Source.TASK, request_id=request_id,
                                   source_ip=None, request=None):
                return fn(*args, **kwargs)

        return shared_task(name=name, **options)(run)

    return decorate


def task_named(name: str):
    """The task registered under ``name``: services send the tasks that wrap them by name,
    so that a tasks module may import its services and never the other way round. Every
    process registers every app's tasks at start-up (``config/apps.py``)."""
    return current_app.tasks[name]


def send(task, *args: str) -> bool:
    """Enqueue ``task`` (a task or its name) now; False, logged, if the broker is down."""
    sent = task_named(task) if isinstance(task, str) else task
    try:
        sent.delay(*args)
    except OperationalError as error:
        logger.error("could not enqueue %s%r, the broker is unreachable: %s", sent.name, args,
                     error)
        return False
    return True


def send_on_commit(task, *args: str) -> None:
    """Enqueue ``task`` (a task or its name) once the transaction commits. A broker that is down costs only the
    message, not the request that already committed: the rows are the truth, and beat finds
    the work again (the reaper re-sends pending operations; autoscaling runs on a schedule)."""

    transaction.on_commit(lambda: send(task, *args))
