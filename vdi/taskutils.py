"""How tasks are declared: stable names, ids only, platform scope, enqueue after commit."""

from __future__ import annotations

import functools

from celery import current_task, shared_task

from tenants.scoping import scopes_disabled
from vdi.context import Source, bind


def platform_task(name: str, **options):
    """A Celery task that acts for the platform, across tenants (it loads rows by id)."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            request_id = getattr(getattr(current_task, "request", None), "id", None)
            with scopes_disabled(), bind(source=Source.TASK, request_id=request_id,
                                         source_ip=None, request=None):
                return fn(*args, **kwargs)

        return shared_task(name=name, **options)(run)

    return decorate
