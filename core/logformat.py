"""Log records as one JSON object per line (``LOG_FORMAT=json``, the production default).

Each line carries the time, level, logger and message, plus who and what it was for, read
from the request context (``core/context.py``): the request id (a Celery task's id in
workers), the source (api, portal, admin, task, system), the organisation in scope, the
signed-in user and the client address; a task's lines also carry the id of the web request
that caused it (``origin_request_id``). A formatter of our own: a dozen lines over the
standard library, where a JSON-logging dependency would add options we don't use.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from django.utils.functional import SimpleLazyObject, empty

from core import context
from core.events import log_context_requested


def _user(request) -> str | None:
    """The signed-in user's name, if the request already knows it. A user not yet loaded
    (Django's lazy request.user) is left alone: loading it would query the database from
    inside a log call."""
    user = getattr(request, "__dict__", {}).get("user")
    if isinstance(user, SimpleLazyObject):
        user = None if user._wrapped is empty else user._wrapped
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.get_username()


def origin_request_id() -> str | None:
    """In a worker, the id of the web request that caused the running task (config/celery.py
    sends it along)."""
    from celery import current_task

    return getattr(getattr(current_task, "request", None), "origin_request_id", None)


def record_context() -> dict:
    """What the current request or task adds to a log line."""
    ctx = context.current()
    fields = {"request_id": ctx.request_id, "source": ctx.source}
    for _receiver, extra in log_context_requested.send(sender=None):
        fields.update(extra)
    fields.update(user=_user(ctx.request), client=ctx.source_ip)
    if ctx.source == context.Source.TASK:
        fields["origin_request_id"] = origin_request_id()
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_context(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
