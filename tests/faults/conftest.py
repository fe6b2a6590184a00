"""Fault injection: real workers, beat, gunicorn, Redis, PostgreSQL and libvirtd are killed or
restarted while they work, and the product has to recover on its own.

Everything a test breaks is its own (a private Redis, PostgreSQL cluster or sshd) except the
lab's libvirtd, which the libvirtd test stops for a few seconds under the lab's lock. The
timings (tests/faults/support.py) are short so that each recovery takes seconds; what they
stand for in production is in docs/resilience.md.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import (  # noqa: F401 - the lab's fixtures, shared with tests/e2e
    lab,
    lab_image,
    libvirt_conn,
    remove_guests,
)
from tests.faults.support import Stopwatch


@pytest.fixture
def stopwatch(request):
    return Stopwatch(request.node.name)
