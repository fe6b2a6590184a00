"""List filters: one FilterSet per list endpoint (SPEC §4: lists are paginated and filterable).

Every filter validates its value: an unknown choice, a malformed id, date or boolean, or an
ordering on a field that is not offered answers 400 in the error envelope, with the problem
under the parameter's name in ``details``; nothing is silently ignored. Related objects are
given by id (``pool``, ``host``, ``image``, ``desktop``; looked up through the model's scoped
manager, so another tenant's id is invalid, never a leak), people by username.
"""

from __future__ import annotations

from datetime import timezone

from django import forms
from django.core.exceptions import ValidationError
from django_filters import filters as plain_filters
from django_filters.fields import IsoDateTimeField
from django_filters import rest_framework as filters
from rest_framework import filters as drf_filters
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination


class StrictBooleanField(forms.NullBooleanField):
    """``true``/``false`` (or ``1``/``0``); anything else is invalid rather than ignored."""

    widget = forms.TextInput
    TRUE, FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})

    def to_python(self, value):
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise ValidationError("Must be true or false.", code="invalid")

    def validate(self, value):
        pass


class StrictBooleanFilter(plain_filters.BooleanFilter):  # not DRF's: its widget drops bad values
    field_class = StrictBooleanField


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 time, converted to UTC: any offset Python reads (up to ±23:59) works on
    every database (PostgreSQL refuses offsets past ±15:59); a time that has no UTC
    equivalent (year 1 or 9999 at the edge) is invalid."""

    def to_python(self, value):
        result = super().to_python(value)
        if result is None or result.tzinfo is None:
            return result
        try:
            return result.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class DateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class OrderingFilter(drf_filters.OrderingFilter):
    """``?ordering=a,-b`` among the view's ``ordering_fields``: an unknown field is a 400
    (DRF would drop it silently). Ties are broken by the primary key, so that the pages of
    a sorted list neither repeat nor skip rows."""

    def remove_invalid_fields(self, queryset, fields, view, request):
        valid = [item[0] for item in self.get_valid_fields(queryset, view, {"request": request})]
        unknown = [term for term in fields if term.removeprefix("-") not in valid]
        if unknown:
            raise serializers.ValidationError({self.ordering_param: [
                f"Unknown ordering field {unknown[0]!r}; use {', '.join(valid)} "
                "(a leading - for descending, several separated by commas)."]})
        return fields

    def filter_queryset(self, request, queryset, view):
        ordering = self.get_ordering(request, queryset, view)
        return queryset.order_by(*ordering, "pk") if ordering else queryset

    def get_schema_operation_parameters(self, view):
        fields = getattr(view, "ordering_fields", None)
        if not isinstance(fields, list | tuple):
            return super().get_schema_operation_parameters(view)
        names = [item if isinstance(item, str) else item[0] for item in fields]
        return [{
            "name": self.ordering_param,
            "required": False,
            "in": "query",
            "description": "Sort by these fields, comma-separated; a leading - for descending.",
            "schema": {"type": "array", "items": {
                "type": "string", "enum": sorted([*names, *(f"-{name}" for name in names)])}},
            "style": "form",
            "explode": False,
        }]


class ListPagination(LimitOffsetPagination):
    """``?limit=&offset=`` (default limit: PAGE_SIZE). A larger limit is cut to MAX_LIMIT:
    unbounded, one request could ask for a whole table (or, past 2^63, make the database
    fail)."""

    max_limit = 500


def scoped(model):
    """A related-object filter's choices, read per request through the model's default
    manager: inside the request's tenant scope, never at import time."""
    return lambda request: model.objects.all()


class ListFilterSet(filters.FilterSet):
    """Base of every list's filters: the ``created_at`` range (ISO 8601; a time without an
    offset is UTC), ``created_after`` inclusive and ``created_before`` exclusive.

    Every filter is declared: generating one from a model field would query the model's
    scoped manager when the class is built, outside any tenant scope."""

    created_after = DateTimeFilter(
        field_name="created_at", lookup_expr="gte",
        help_text="Created at or after this time (ISO 8601, e.g. 2025-01-31T12:00:00Z).")
    created_before = DateTimeFilter(
        field_name="created_at", lookup_expr="lt",
        help_text="Created before this time (ISO 8601).")


def _choices(model, field: str):
    return model._meta.get_field(field).choices


def choice_filter(model, field: str, label: str):
    """Several values are OR-ed: ``?state=running&state=stopped``."""
    return filters.MultipleChoiceFilter(
        field_name=field, choices=_choices(model, field),
        help_text=f"Only these {label}; repeat the parameter for several.")
