"""Settings for the test suite: the project's settings with VDI_ENV=test."""

import os
from pathlib import Path

os.environ.setdefault("VDI_ENV", "test")
# Never share the demo's queue, results or database files.
os.environ.setdefault("VDI_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

# Two test runs may share the hypervisor lab: each names its tenants' networks and takes
# their subnets apart from the other's (its workers inherit these with the environment),
# and from the default range a demo on the same lab uses (10.128.0.0/9).
_run = os.getpid() % 64
os.environ.setdefault("VDI_TENANT_NETWORK_NAME", f"vdi-r{_run}t")
os.environ.setdefault("VDI_TENANT_NETWORK_RANGE", f"10.{64 + _run}.0.0/16")

from config.settings import *  # noqa: E402,F401,F403

# Hashing cost is a security setting; tests log in hundreds of times and don't measure it.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
