"""Choices that carry their colour in the UI as well as their label.

A state's label is what people read (``get_<field>_display`` in templates); its tone is how it
is coloured (``class="state tone-<tone>"``, styled once in ``static/css/portal.css``). A
subclass of ``TonedChoices`` names the tone of each value in ``TONES``; a value left out is
``IDLE``.
"""

from __future__ import annotations

import enum

from django.db import models

nonmember = enum.nonmember


class Tone(models.TextChoices):
    GOOD = "good", "Up, done or allowed"
    BUSY = "busy", "On its way somewhere"
    IDLE = "idle", "Off or over, nothing wrong"
    BAD = "bad", "Broken, refused or lost"


class TonedChoices(models.TextChoices):
    """Text choices with a tone per value: ``TONES = nonmember({value: Tone, ...})``."""

    @property
    def tone(self) -> str:
        return self.tone_of(self.value)

    @classmethod
    def tone_of(cls, value) -> str:
        return cls.TONES.get(value, Tone.IDLE)


def tone_property(field: str, choices: type[TonedChoices]) -> property:
    """A model's ``<field>_tone``: the tone of the value the field holds now."""
    return property(lambda instance: choices.tone_of(getattr(instance, field)),
                    doc=f"The UI tone of {field} ({choices.__name__}).")
