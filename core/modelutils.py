"""Helpers for model instances that every layer uses."""

from __future__ import annotations

from django.db import models


def model_update(instance: models.Model, fields: dict) -> dict[str, list]:
    """Set ``fields`` on ``instance`` (not saved: the caller validates and saves as its
    service requires). Returns ``{name: [old, new]}`` for the fields whose value changed."""
    changed = {}
    for name, value in fields.items():
        old = getattr(instance, name)
        if old != value:
            changed[name] = [old, value]
        setattr(instance, name, value)
    return changed
