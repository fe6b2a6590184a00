"""Readiness: can this process do its job right now? (``/readyz``; ``/healthz`` only says
the process is alive.) Each check returns an empty string when fine, else why not."""

from __future__ import annotations

from django.db import connection

from hypervisors.choices import HostState
from hypervisors.models import Host


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        return f"database: {error}"
    return ""


def check_broker() -> str:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # noqa: BLE001
        return f"broker: {error}"
    return ""


def check_hosts() -> str:
    if not Host.objects.filter(enabled=True, state=HostState.UP).exists():
        return "hosts: no enabled host is up"
    return ""


CHECKS = {"database": check_database, "broker": check_broker, "hosts": check_hosts}


def readiness() -> dict[str, str]:
    """Every check's problem ("" when fine); the hosts check needs the database."""
    problems = {"database": check_database(), "broker": check_broker()}
    problems["hosts"] = check_hosts() if not problems["database"] else "hosts: not checked"
    return problems
