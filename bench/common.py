"""What every benchmark shares: its own database, Redis database and data directory, the
product's real processes (gunicorn, Celery workers), CPU and memory accounting, and the
results file.

A benchmark runs the product in its production profile (DEBUG off, the real password hasher)
against ``BENCH_DATABASE_URL`` (a database of its own, recreated for every run from a
migrated template) and ``BENCH_REDIS_URL`` (a Redis database of its own, flushed).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", ROOT / "bench" / "results"))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL",
                              "postgres://postgres@127.0.0.1:5432/vdi_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", ROOT / "var" / "bench"))
LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
# libvirt's test driver inside the lab's libvirtd: one simulated hypervisor shared by every
# process that connects, kept alive by a "keeper" connection (see keeper()).
TEST_URI = "test+unix:///default"
PYTHON = sys.executable

PRODUCT_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "VDI_ENV": "production",
    "SECRET_KEY": "benchmark-only-" + "x" * 50,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    # Plain HTTP on loopback: no redirect to https (TLS is the load balancer's job).
    "SECURE_SSL_REDIRECT": "0",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "VDI_DATA_DIR": str(DATA_DIR),
    # Clients are told apart by X-Forwarded-For, as behind one reverse proxy.
    "VDI_THROTTLE_NUM_PROXIES": "1",
    # The benchmarks make pools of thousands of desktops; the platform cap and production's
    # default quotas of a new organisation are for customers (empty: unlimited).
    "VDI_POOL_MAX_DESKTOPS": "100000",
    **{f"VDI_DEFAULT_TENANT_MAX_{quota}": ""
       for quota in ("DESKTOPS", "VCPUS", "MEMORY_MB", "SESSIONS")},
    "C_FORCE_ROOT": "1",
    "PYTHONUNBUFFERED": "1",
}


_LOAD_AT_START = os.getloadavg()


def configure(**extra: str) -> dict[str, str]:
    """Point this process (and the ones it starts) at the benchmark's database and Redis."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "logs").mkdir(exist_ok=True)
    os.environ.update(PRODUCT_ENV)
    os.environ.update(extra)
    sys.path.insert(0, str(ROOT))
    return dict(os.environ)


def django_setup() -> None:
    import django

    django.setup()


def arguments(description: str, size: int, **numbers: int) -> argparse.Namespace:
    """``--size`` and ``--out``, plus an integer option for each of ``numbers``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=size,
                        help=f"how many (default {size}; the smoke test uses a handful)")
    for name, default in numbers.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    parser.add_argument("--out", default="",
                        help="results file (default bench/results/<name>.json)")
    return parser.parse_args()


# --- database and Redis ---------------------------------------------------------------------
def _migrations_stamp() -> str:
    """Changes whenever a migration does: the template database is rebuilt then."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _admin_connection():
    import psycopg2

    url = urlsplit(DATABASE_URL)
    conn = psycopg2.connect(urlunsplit(url._replace(path="/postgres")), connect_timeout=5)
    conn.autocommit = True
    return conn


def _drop(cursor, name: str) -> None:
    cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = %s AND pid <> pg_backend_pid()", [name])
    cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


def database_drop(name: str) -> None:
    with contextlib.closing(_admin_connection()) as conn, conn.cursor() as cursor:
        _drop(cursor, name)


def database_reset() -> None:
    """A fresh, migrated benchmark database: a copy of a template that is migrated once per
    change of the migrations (CREATE DATABASE … TEMPLATE takes a second, migrate far more)."""
    name = urlsplit(DATABASE_URL).path.lstrip("/")
    template = "vdi_bench_template"  # shared by every benchmark database on the server
    stamp = _migrations_stamp()
    with contextlib.closing(_admin_connection()) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                       "WHERE datname = %s", [template])
        row = cursor.fetchone()
        if row is None or row[0] != stamp:
            _drop(cursor, template)
            cursor.execute(f'CREATE DATABASE "{template}"')
            url = urlsplit(DATABASE_URL)._replace(path=f"/{template}")
            subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                           env={**os.environ, "DATABASE_URL": urlunsplit(url)}, check=True)
            cursor.execute(f"COMMENT ON DATABASE \"{template}\" IS '{stamp}'")
        _drop(cursor, name)
        cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def collect_static() -> None:
    """The production profile serves hashed static files from a manifest (portal pages)."""
    subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT,
                   env=os.environ, check=True)


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


_monitor = None


def postgres_backends() -> list[int]:
    """Pids of the PostgreSQL backends serving the benchmark database, over one monitoring
    connection kept open (none are left on a busy server); empty if it cannot answer."""
    import psycopg2

    global _monitor
    name = urlsplit(DATABASE_URL).path.lstrip("/")
    try:
        if _monitor is None or _monitor.closed:
            _monitor = _admin_connection()
        with _monitor.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name])
            return [pid for (pid,) in cursor.fetchall()]
    except psycopg2.Error:
        _monitor = None
        return []


def postgres_version() -> str:
    with contextlib.closing(_admin_connection()) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


# --- libvirt ----------------------------------------------------------------------------------
def require_libvirtd() -> None:
    if not LIBVIRT_SOCKET.exists():
        sys.exit(f"libvirtd is not running ({LIBVIRT_SOCKET} is missing): start the lab with "
                 "`VDI_LAB_HOLDER=$$ scripts/lab start` (bench/run does it)")


@contextlib.contextmanager
def keeper():
    """A connection to the test driver in libvirtd, open for the whole benchmark: the
    driver's state lives while any connection is open."""
    import libvirt

    require_libvirtd()
    conn = libvirt.open(TEST_URI)
    try:
        yield conn
    finally:
        conn.close()


def host_uri(n: int) -> str:
    """The n-th simulated host. Every host is the same test driver in the same libvirtd,
    but each URI is distinct, so the product opens and caches one connection per host per
    process as it would for real hosts (libvirt ignores the unknown query parameter)."""
    return f"{TEST_URI}?host={n}"


def test_driver_remove(conn, names: set[str], volumes: set[str] = frozenset()) -> int:
    """Destroy and undefine the benchmark's domains and delete its volumes."""
    import libvirt

    removed = 0
    # One lookup per name: listing every domain fails past the RPC's limit (16,384 domains),
    # which the storm's full size passes.
    for name in names:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            continue  # already gone
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        removed += 1
    storage = conn.storagePoolLookupByName("default-pool")
    for volume in storage.listAllVolumes(0):
        if volume.name() in volumes:
            try:
                volume.delete(0)
            except libvirt.libvirtError:
                pass
    return removed


# --- the product's processes ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """One of the product's processes, with its log under the data directory."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.ready: Callable[[], bool] = lambda: True
        self.log = DATA_DIR / "logs" / f"{name}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})
        self.psutil = psutil.Process(self.process.pid)

    def wait_ready(self, ready, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout_s} s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.psutil, *self.psutil.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def gunicorn(workers: int, threads: int, wait: bool = True, app: str = "config.wsgi:application",
             health: str = "/healthz", name: str = "gunicorn",
             env: dict[str, str] | None = None) -> tuple[Service, str]:
    """The web tier: gunicorn with gthread workers (a connect mostly waits: on the tenant
    lock, then on the worker that sets the console password). ``app`` another WSGI app
    served the same way (the login storm's floor)."""
    port = free_port()
    service = Service(name, [
        str(Path(PYTHON).parent / "gunicorn"), app,
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--worker-class", "gthread", "--threads", str(threads),
        "--backlog", "2048", "--timeout", "120", "--log-level", "warning",
    ], env=env)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        import requests

        try:
            return requests.get(f"{base}{health}", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    service.ready = answers
    if wait:
        service.wait_ready(answers)
    return service, base


def celery_worker(name: str, queues: str, pool: str, concurrency: int,
                  wait: bool = True) -> Service:
    service = Service(f"worker-{name}", [
        PYTHON, "-m", "celery", "-A", "config", "worker", "-Q", queues, f"--pool={pool}",
        f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-n", f"{name}@%h", "-l", "info",
    ])
    service.ready = lambda: "ready." in service.log.read_text()
    if wait:
        service.wait_ready(service.ready)
    return service


def wait_ready(*services: Service) -> None:
    """Wait for services started with ``wait=False`` (they start side by side)."""
    for service in services:
        service.wait_ready(service.ready)


# --- measurements ------------------------------------------------------------------------------
def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class CpuMeter:
    """CPU seconds used by groups of processes between start() and stop(). Each group is a
    callable returning its processes; they come and go (database backends, pool children),
    so a thread samples them twice a second and a process that ended counts with its last
    sample."""

    def __init__(self, **groups):
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.latest: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {p.pid: cpu_seconds([p]) for p in find()}
                for name, find in self.groups.items()}

    def _record(self) -> None:
        for name, seen in self._sample().items():
            self.latest[name].update(seen)

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self._record()

    def start(self) -> None:
        self.before = self._sample()
        self.latest = {name: dict(seen) for name, seen in self.before.items()}
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._record()
        self.used = {
            name: round(sum(seconds - self.before[name].get(pid, 0.0)
                            for pid, seconds in self.latest[name].items()), 3)
            for name in self.groups
        }
        return self.used


def postgres_processes() -> list[psutil.Process]:
    found = []
    for pid in postgres_backends():
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def processes_named(name: str) -> Callable[[], list[psutil.Process]]:
    """A CpuMeter group: the machine's processes called ``name`` (``redis-server``,
    ``libvirtd``), looked up again only when none of those found is left. They are shared
    servers: their CPU includes whatever else uses them meanwhile."""
    found: list[psutil.Process] = []

    def find() -> list[psutil.Process]:
        alive = [process for process in found if process.is_running()]
        if not alive:
            alive = [process for process in psutil.process_iter(["name"])
                     if process.info["name"] == name]
        found[:] = alive
        return alive

    return find


def rss_mb(process: psutil.Process) -> float:
    return round(process.memory_info().rss / 2**20, 1)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict:
    return {f"p{q}_ms": round(percentile(seconds, q) * 1000, 1) if seconds else None
            for q in (50, 95, 99)} | {"max_ms": round(max(seconds) * 1000, 1) if seconds else None}


def machine() -> dict:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "load_avg_at_start": [round(x, 2) for x in _LOAD_AT_START],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version(),
    }


def write_result(name: str, result: dict, out: str = "") -> Path:
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "finished_at": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), **result, "machine": machine()}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def say(message: str) -> None:
    print(f"==> {message}", flush=True)
