"""What the fault tests share: the workers' short timings, a stopwatch, waiting helpers."""

from __future__ import annotations

import time
from pathlib import Path

from tenants.scoping import scopes_disabled
from tests.processes import wait_for
from vdi.choices import UNFINISHED_OPERATION_STATES
from vdi.models import Operation

# Workers and beat in these tests: hosts checked every second and down after two misses,
# the reaper every second, an operation's deadline in seconds rather than minutes.
FAULT_ENV = {
    "VDI_HOST_CHECK_INTERVAL_S": "1",
    "VDI_HOST_DOWN_AFTER_FAILURES": "2",
    "VDI_OPERATIONS_REAP_INTERVAL_S": "1",
    "VDI_OPERATION_DEADLINE_S": "6",
    "VDI_SHUTDOWN_GRACE_S": "5",
    "VDI_LIBVIRT_CALL_TIMEOUT_S": "10",
}


class Stopwatch:
    """Measured recoveries, printed at the end of the test (``pytest -s`` shows them)."""

    def __init__(self, name: str):
        self.name = name
        self.marks: dict[str, float] = {"start": time.monotonic()}

    def mark(self, what: str) -> None:
        self.marks[what] = time.monotonic()

    def between(self, first: str, second: str) -> float:
        return self.marks[second] - self.marks[first]

    def report(self, **spans: tuple[str, str]) -> None:
        figures = ", ".join(f"{label} {self.between(*span):.1f} s" for label, span in spans.items())
        print(f"\n[{self.name}] {figures}")


def no_operation_stuck() -> bool:
    with scopes_disabled():
        return not Operation.objects.filter(state__in=UNFINISHED_OPERATION_STATES).exists()


def wait_no_operation_stuck(log: Path, timeout_s: float = 60) -> None:
    wait_for(no_operation_stuck, timeout_s,
             lambda: f"every operation to finish (worker log:\n{log.read_text()[-3000:]})")
