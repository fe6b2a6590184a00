"""Settings of a worker that must be caught in the middle of a provisioning (see stall.py)."""

from tests.settings import *  # noqa: F401,F403

CELERY_IMPORTS = ["tests.faults.stall"]
