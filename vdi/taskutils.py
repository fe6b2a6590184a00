"""How tasks are declared: stable names, ids only, platform scope, enqueue after commit."""

from __future__ import annotations

import functools

from celery import shared_task

from tenants.scoping import scopes_disabled


def platform_task(name: str, **options):
    """A Celery task that acts for the platform, across tenants (it loads rows by id)."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with scopes_disabled():
                return fn(*args, **kwargs)

        return shared_task(name=name, **options)(run)

    return decorate
