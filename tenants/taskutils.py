"""Tasks that act for the platform, across tenants: they take ids, load their rows
themselves and run with tenant scopes disabled."""

from __future__ import annotations

from core.taskutils import task

from .scoping import scopes_disabled


def platform_task(name: str, **options):
    """A Celery task that acts for the platform, across tenants (it loads rows by id)."""
    return task(name, scope=scopes_disabled, **options)
