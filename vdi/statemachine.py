"""State machines: allowed transitions declared once, enforced by a conditional update."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils import timezone


class IllegalTransition(Exception):
    def __init__(self, label: str, current: str, target: str):
        super().__init__(f"{label} cannot go from {current} to {target}")
        self.current = current
        self.target = target


@dataclass(frozen=True)
class StateMachine:
    label: str
    transitions: dict[str, frozenset[str]]
    state_field: str = "state"
    changed_field: str = "state_changed_at"

    def can(self, current: str, target: str) -> bool:
        return target in self.transitions.get(current, frozenset())

    def sources(self, target: str) -> list[str]:
        return [src for src, targets in self.transitions.items() if target in targets]

    def check(self, current: str, target: str) -> None:
        if not self.can(current, target):
            raise IllegalTransition(self.label, current, target)

    def apply(self, instance: models.Model, target: str, **fields) -> None:
        """Move ``instance`` to ``target`` if, in the database, it is still in a state that
        allows it. Concurrent writers cannot both win: the update is conditional on the state
        this process last saw."""
        current = getattr(instance, self.state_field)
        self.check(current, target)
        now = timezone.now()
        values = {self.state_field: target, self.changed_field: now, **fields}
        updated = (
            type(instance)
            ._base_manager.filter(pk=instance.pk, **{self.state_field: current})
            .update(**values)
        )
        if not updated:
            fresh = type(instance)._base_manager.filter(pk=instance.pk).values_list(
                self.state_field, flat=True
            ).first()
            raise IllegalTransition(self.label, fresh or "deleted", target)
        for name, value in values.items():
            setattr(instance, name, value)
