"""Settings for the test suite: the project's settings with VDI_ENV=test."""

import os
from pathlib import Path

os.environ.setdefault("VDI_ENV", "test")
# Never share the demo's queue, results or database files.
os.environ.setdefault("VDI_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from vdi.settings import *  # noqa: E402,F401,F403

# Hashing cost is a security setting; tests log in hundreds of times and don't measure it.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
