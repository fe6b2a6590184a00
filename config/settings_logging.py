"""The log settings, LOG_FORMAT and LOGGING (config/settings.py calls these)."""

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def log_format(development: bool) -> str:
    """One JSON object per line in production (core/logformat.py), for log shippers; plain
    lines in the demo and tests unless LOG_FORMAT says otherwise."""
    fmt = os.environ.get("LOG_FORMAT", "plain" if development else "json")
    if fmt not in {"json", "plain"}:
        raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {fmt!r}")
    return fmt


def logging_config(formatter: str) -> dict[str, Any]:
    """The LOGGING dict: every line to stderr through ``formatter`` (plain or json), at
    LOG_LEVEL (INFO)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "core.logformat.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": formatter}},
        "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }
