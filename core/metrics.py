"""Metrics observed where the work happens (histograms and counters), and the helper that
times a block into one. ``/metrics`` (config/metrics.py) serves them with the state gauges
read at scrape time."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter, Histogram

TICKET_ISSUE_SECONDS = Histogram(
    "vdi_ticket_issue_seconds",
    "Time to issue a console ticket, including the worker setting the password on the "
    "live domain. outcome: issued, pending (no worker answered in time) or error.",
    ["protocol", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
OPERATION_SECONDS = Histogram(
    "vdi_operation_duration_seconds",
    "Time one run of a desktop operation took in a worker. outcome: succeeded, failed or "
    "retry (a transient error: it runs again).",
    ["kind", "outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
OPERATION_FAILURES = Counter(
    "vdi_operation_failures",
    "Desktop operations that failed for good (out of attempts, a permanent error, or "
    "reaped), by kind.",
    ["kind"],
)


@contextmanager
def observe_seconds(histogram: Histogram, **labels) -> Iterator[dict]:
    """Times the block into ``histogram``; the block may change the labels in the dict it is
    given (e.g. the outcome, known only at the end), or empty it to record nothing."""
    started = time.monotonic()
    try:
        yield labels
    finally:
        if labels:
            histogram.labels(**labels).observe(time.monotonic() - started)
