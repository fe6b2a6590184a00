"""Usage metering: a journal of state changes, and monthly figures computed from it.

Every desktop and session state change goes through its state machine, which tells
``usage_record``; a month's desktop hours, vCPU-hours, memory GB-hours, session hours and
peak concurrent sessions are then exact sums over the journal's intervals, clipped to the
month (UTC), with anything still running counted up to now.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timezone as dt_timezone

from django.db import transaction
from django.utils import timezone

from .models import MonthlyUsage, Tenant, UsageEvent, UsageSubject
from .scoping import scopes_disabled

# --- the journal ------------------------------------------------------------------------------
# Which rows the journal follows (by model label), and which carry a size.
USAGE_SUBJECTS = {"vdi.desktop": UsageSubject.DESKTOP, "brokers.session": UsageSubject.SESSION}
SIZED = {UsageSubject.DESKTOP: ("vcpus", "memory_mb")}



def usage_record(model, pk, state: str, at: datetime, *, active: bool) -> None:
    """Called by the desktop and session state machines for every state a row enters;
    ``active`` says whether the state counts (a running desktop, a live session)."""
    label = model._meta.label_lower
    subject = USAGE_SUBJECTS.get(label)
    if subject is None:
        return
    fields = ("tenant_id", "pool_id", *SIZED.get(subject, ()))
    with scopes_disabled():
        row = model._base_manager.filter(pk=pk).values(*fields).first()
        if row is None:
            return
        UsageEvent.objects.create(
            tenant_id=row["tenant_id"], subject=subject, subject_id=pk, pool_id=row["pool_id"],
            state=state, active=active, vcpus=row.get("vcpus", 0),
            memory_mb=row.get("memory_mb", 0), at=at,
        )


# --- monthly figures --------------------------------------------------------------------------
def month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=dt_timezone.utc)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=dt_timezone.utc)
    return start, end


def _intervals(events, start: datetime, stop: datetime):
    """(subject_id, begin, end, event) for every stretch a subject was active, clipped."""
    by_subject = defaultdict(list)
    for event in events:
        by_subject[event.subject_id].append(event)
    for subject_id, changes in by_subject.items():
        for event, following in zip(changes, changes[1:] + [None]):
            if not event.active:
                continue
            begin = max(event.at, start)
            end = min(following.at if following else stop, stop)
            if end > begin:
                yield subject_id, begin, end, event


def usage_for_month(*, tenant: Tenant, month: date, now: datetime | None = None) -> dict:
    """The tenant's usage in ``month`` (a date in it), exact to the second."""
    now = now or timezone.now()
    start, end = month_bounds(month)
    stop = min(end, now)
    with scopes_disabled():
        events = list(UsageEvent.objects.filter(tenant=tenant, at__lt=stop)
                      .order_by("subject_id", "at", "id"))
    desktop = [e for e in events if e.subject == UsageSubject.DESKTOP]
    session = [e for e in events if e.subject == UsageSubject.SESSION]

    desktop_hours = vcpu_hours = memory_gb_hours = 0.0
    for _subject, begin, finish, event in _intervals(desktop, start, stop):
        hours = (finish - begin).total_seconds() / 3600
        desktop_hours += hours
        vcpu_hours += hours * event.vcpus
        memory_gb_hours += hours * event.memory_mb / 1024

    session_hours = 0.0
    edges = []
    for _subject, begin, finish, _event in _intervals(session, start, stop):
        session_hours += (finish - begin).total_seconds() / 3600
        edges += [(begin, 1), (finish, -1)]
    peak = live = 0
    for _moment, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # ends first
        live += step
        peak = max(peak, live)

    return {
        "month": start.strftime("%Y-%m"),
        "desktop_hours": round(desktop_hours, 4),
        "session_hours": round(session_hours, 4),
        "vcpu_hours": round(vcpu_hours, 4),
        "memory_gb_hours": round(memory_gb_hours, 4),
        "peak_sessions": peak,
        "complete": now >= end,
        "computed_at": now,
    }


def usage_aggregate(*, now: datetime | None = None) -> int:
    """Beat: store every tenant's figures for the current month (and the previous one, which
    may still have been open at the last run). Returns the rows written."""
    now = now or timezone.now()
    this_month = date(now.year, now.month, 1)
    previous = date(now.year - (now.month == 1), (now.month - 2) % 12 + 1, 1)
    written = 0
    for tenant in Tenant.objects.all():
        for month in (previous, this_month):
            figures = usage_for_month(tenant=tenant, month=month, now=now)
            with transaction.atomic(), scopes_disabled():
                MonthlyUsage.objects.update_or_create(
                    tenant=tenant, month=month,
                    defaults={key: figures[key] for key in (
                        "desktop_hours", "session_hours", "vcpu_hours", "memory_gb_hours",
                        "peak_sessions", "computed_at")},
                )
            written += 1
    return written
