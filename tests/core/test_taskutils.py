"""Services send tasks by name: every process, a web process too, has them all registered once
Django is set up, before any request (several threads may send the first ones at once)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, django
django.setup()
from celery import current_app
registered = set(current_app.tasks)
for name in ("hypervisors.host_check", "vdi.operation_run", "brokers.ticket_apply",
             "brokers.console_revoke", "core.idempotency_keys_expire"):
    assert name in registered, name
print("found")
"""


def test_a_web_process_finds_every_task_by_name(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "VDI_ENV": "test",
           "VDI_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "found", done.stderr
