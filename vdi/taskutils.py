"""How tasks are declared: stable names, ids only, platform scope, enqueue after commit."""

from __future__ import annotations

import functools
import logging

from celery import current_task, shared_task
from django.db import transaction
from kombu.exceptions import OperationalError

from tenants.scoping import scopes_disabled
from vdi.context import Source, boundary

logger = logging.getLogger(__name__)


def platform_task(name: str, **options):
    """A Celery task that acts for the platform, across tenants (it loads rows by id)."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            request_id = getattr(getattr(current_task, "request", None), "id", None)
            with scopes_disabled(), boundary(source=Source.TASK, request_id=request_id,
                                             source_ip=None, request=None):
                return fn(*args, **kwargs)

        return shared_task(name=name, **options)(run)

    return decorate


def send_on_commit(task, *args: str) -> None:
    """Enqueue ``task`` once the transaction commits. A broker that is down costs only the
    message, not the request that already committed: the rows are the truth, and beat finds
    the work again (the reaper re-sends pending operations; autoscaling runs on a schedule)."""

    def send():
        try:
            task.delay(*args)
        except OperationalError as error:
            logger.error("could not enqueue %s%r, the broker is unreachable: %s", task.name,
                         args, error)

    transaction.on_commit(send)
