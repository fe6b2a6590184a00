"""State machines: allowed transitions declared once, enforced by a conditional update."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils import timezone
from django.utils.module_loading import import_string


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
    # Dotted path of a callable(model, pk, state, at, active=...) told of every state a row
    # enters, with whether that state counts as in use (``active_states``): usage metering
    # keeps its journal this way.
    journal: str = ""
    active_states: frozenset[str] = frozenset()

    def can(self, current: str, target: str) -> bool:
        return target in self.transitions.get(current, frozenset())

    def sources(self, target: str) -> list[str]:
        return [src for src, targets in self.transitions.items() if target in targets]

    def check(self, current: str, target: str) -> None:
        if not self.can(current, target):
            raise IllegalTransition(self.label, current, target)

    def move(self, model: type[models.Model], pk, current: str, target: str, *,
             unchanged_since=None, **fields) -> dict:
        """Move the row ``pk`` from ``current`` to ``target`` with one conditional UPDATE.

        Returns the values written, or an empty dict when the row was no longer ``current``:
        of several concurrent writers (or a redelivered task) exactly one wins. With
        ``unchanged_since``, a row whose state changed after that moment is left alone too:
        an observation made then is already out of date.
        """
        self.check(current, target)
        values = {self.state_field: target, self.changed_field: timezone.now(), **fields}
        rows = model._base_manager.filter(pk=pk, **{self.state_field: current})
        if unchanged_since is not None:
            rows = rows.filter(**{f"{self.changed_field}__lte": unchanged_since})
        if not rows.update(**values):
            return {}
        self._record(model, pk, target, values[self.changed_field])
        return values

    def created(self, instance: models.Model) -> None:
        """Tell the journal about a row created directly in its first state."""
        self._record(type(instance), instance.pk, getattr(instance, self.state_field),
                     getattr(instance, self.changed_field, None) or timezone.now())

    def _record(self, model, pk, state: str, at) -> None:
        if self.journal:
            import_string(self.journal)(model, pk, state, at,
                                        active=state in self.active_states)

    def apply(self, instance: models.Model, target: str, **fields) -> None:
        """Move ``instance`` to ``target`` if, in the database, it is still in the state this
        process last saw; otherwise raise IllegalTransition with the state it is really in."""
        model = type(instance)
        values = self.move(model, instance.pk, getattr(instance, self.state_field), target,
                           **fields)
        if not values:
            fresh = model._base_manager.filter(pk=instance.pk).values_list(
                self.state_field, flat=True
            ).first()
            raise IllegalTransition(self.label, fresh or "deleted", target)
        for name, value in values.items():
            setattr(instance, name, value)

    def enter(self, instance: models.Model, target: str, **fields) -> None:
        """``apply`` unless the instance is already in ``target``: a retried step re-enters
        the state it reached before without an illegal self-transition."""
        if getattr(instance, self.state_field) != target:
            self.apply(instance, target, **fields)
