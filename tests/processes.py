"""Real processes for tests: a Celery worker and the host watcher, on the test database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
CELERY = [sys.executable, "-m", "celery", "-A", "config"]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(predicate, timeout_s: float, what):
    """Poll ``predicate``; ``what`` (text, or a callable giving it) explains a time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for "
                         f"{what() if callable(what) else what}")


def _environment(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(), "C_FORCE_ROOT": "1", "PYTHONUNBUFFERED": "1",
            **extra}


@contextlib.contextmanager
def running(command: list[str], log: Path, ready: str, env: dict[str, str] | None = None):
    """Run ``command`` until the block ends; wait until ``ready`` appears in its output."""
    with log.open("w") as out:
        process = subprocess.Popen(command, env=_environment(env or {}), cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready in log.read_text() or process.poll() is not None, 60,
                 f"{command[3] if len(command) > 3 else command[0]} to start")
        assert process.poll() is None, f"exited early:\n{log.read_text()}"
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def celery_worker(tmp_path: Path, env: dict[str, str] | None = None, *, name: str = "worker",
                  purge: bool = True, beat: bool = False, supervised: bool = False):
    """A real worker on the vdi and console queues, after purging what earlier runs left
    (unless ``purge`` is false); with ``beat`` it runs the beat schedule too; ``supervised``,
    it is started again whenever it exits (tests/faults/supervise.py)."""
    if purge:
        subprocess.run([*CELERY, "purge", "-f", "-Q", "vdi,console"],
                       env=_environment(env or {}), cwd=ROOT, check=True, capture_output=True,
                       timeout=60)
    command = [*CELERY, "worker", "--pool=threads", "--concurrency=4", "-Q", "vdi,console",
               "--without-gossip", "--without-mingle", "-l", "info", "-n", f"{name}@%h"]
    if beat:
        command += ["--beat", "--schedule", str(tmp_path / f"{name}-beat-schedule")]
    if supervised:
        command = [sys.executable, "-m", "tests.faults.supervise", *command]
    with running(command, tmp_path / f"{name}.log", "ready.", env) as log:
        yield log


@contextlib.contextmanager
def host_watcher(tmp_path: Path, env: dict[str, str] | None = None):
    command = [sys.executable, "manage.py", "watch_hosts", "--sync-every", "2"]
    with running(command, tmp_path / "watcher.log", "watching hosts", env) as log:
        yield log
