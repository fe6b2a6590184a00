"""Benchmark 5: memory.

Resident memory (RSS) of a gunicorn web worker and of a Celery worker process at rest (just
started and warmed by a few requests and tasks), beside the figures benchmarks 1 and 2
recorded after their runs (bench/results/login_storm.json, provisioning.json). The floor: a
bare Python process with Django set up on the same settings (every app loaded, nothing
served).

    .venv/bin/python -m bench.memory
"""

from __future__ import annotations

import json
import subprocess
import time

from bench.common import (
    PYTHON, RESULTS_DIR, ROOT, arguments, celery_worker, configure, database_reset,
    django_setup, gunicorn, redis_flush, rss_mb, say, wait_ready, write_result,
)

BARE = ("import os, django, psutil; django.setup(); "
        "print(round(psutil.Process().memory_info().rss / 2**20, 1))")


def earlier(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("rss_mb")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], size=20)
    configure()
    say("memory: web and worker processes at rest")
    database_reset()
    redis_flush()
    django_setup()

    import requests

    from core.tasks import idempotency_keys_expire_task

    web, base = gunicorn(2, 8, wait=False)
    worker = celery_worker("memory", "vdi,console", "prefork", 2, wait=False)
    try:
        wait_ready(web, worker)
        for _ in range(args.size):
            requests.get(f"{base}/healthz", timeout=10).raise_for_status()
            requests.get(f"{base}/api/v1/tenants/", timeout=10)
        for result in [idempotency_keys_expire_task.delay() for _ in range(args.size)]:
            result.get(timeout=60)
        time.sleep(1)
        web_workers = [rss_mb(p) for p in web.processes()[1:]]
        worker_processes = [rss_mb(p) for p in worker.processes()[1:]]
        at_rest = {"web_master": rss_mb(web.psutil), "web_workers": web_workers,
                   "celery_main": rss_mb(worker.psutil), "celery_processes": worker_processes}
    finally:
        web.stop()
        worker.stop()
    bare = float(subprocess.run([PYTHON, "-c", BARE], cwd=ROOT, check=True, text=True,
                                capture_output=True).stdout.strip())
    web_rss = max(web_workers)
    ratio = round(web_rss / bare, 2)
    result = {"at_rest": at_rest, "after_login_storm": earlier("login_storm"),
              "after_provisioning": earlier("provisioning"), "floor_bare_django_mb": bare,
              "floor_ratio": ratio}
    path = write_result("memory", result, args.out)
    say(f"results: {path}")
    print(f"memory at rest: Celery worker process {max(worker_processes)} MB")
    print(f"memory: web worker {web_rss} MB at rest; floor (bare Django process) {bare} MB: "
          f"{ratio}x the floor")


if __name__ == "__main__":
    main()
