"""Benchmark 1: the login storm.

A pool holds N ready spares on simulated hosts (libvirt's test driver inside libvirtd); 200
clients hit gunicorn at once with N Connects (POST pools/{id}/connect/), with API tokens
issued beforehand; then a second pool of N spares and N other users who each log in with
their password first (POST auth/token/), as everyone does at 9 am. Real PostgreSQL, Redis
and Celery workers: each ticket is a round trip to a worker on the ``console`` queue that
asks libvirtd to set the console password (the test driver refuses, as it cannot, and the
ticket comes back marked simulated).

The floor: the same database transaction (lock the tenant row, claim a spare with FOR UPDATE
SKIP LOCKED, insert the session and ticket rows) run bare with psycopg2, with as many
connections as the web tier has threads, on a third pool of N spare rows.

    .venv/bin/python -m bench.login_storm [--size 1000] [--clients 200]
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from bench.common import (
    CpuMeter, arguments, celery_worker, configure, database_reset, django_setup, gunicorn,
    host_uri, keeper, latency_summary, postgres_processes, redis_flush, require_libvirtd,
    rss_mb, say, test_driver_remove, wait_ready, write_result,
)

PASSWORD = "a long passphrase nobody guesses"
HOSTS = 10
SPREAD = 10  # tenants in the third run
PROFILED = 10  # Connects profiled one by one after the storms
WEB_WORKERS, WEB_THREADS = 2, 8


def seed_world(size: int):
    """A tenant, a public image, the simulated hosts and the users with their memberships."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from hypervisors.choices import HostState
    from hypervisors.models import Host
    from tenants.choices import Role
    from tenants.models import Membership
    from tenants.scoping import scopes_disabled, tenant_scope
    from tenants.services import tenant_create
    from vdi.models import Image

    tenant = tenant_create(slug="storm", name="Storm Inc")
    with scopes_disabled():
        image = Image.objects.create(name="bench", version=1, base_volume="bench-base.qcow2",
                                     disk_gb=1, default_memory_mb=256)
    hosts = Host.objects.bulk_create(
        Host(name=f"sim-{n:02d}", uri=host_uri(n), virt_type="qemu",
             console_address="127.0.0.1", storage_pool="default-pool", state=HostState.UP,
             cpus=10_000, memory_mb=100_000_000, max_concurrent_boots=4)
        for n in range(HOSTS)
    )
    # One PBKDF2 hash shared by every account: hashing 2N passwords here would take minutes
    # and measure nothing; every login below still checks it at full cost.
    encoded = make_password(PASSWORD)
    User = get_user_model()
    users = User.objects.bulk_create(
        User(username=f"{kind}{n:05d}", password=encoded, email=f"{kind}{n}@example.com")
        for kind in ("token", "login") for n in range(size)
    )
    with tenant_scope(tenant):
        Membership.objects.bulk_create(Membership(tenant=tenant, user=user, role=Role.MEMBER)
                                       for user in users)
    return tenant, image, hosts, users[:size], users[size:]


def seed_spread(conn, image, hosts, size: int):
    """SPREAD tenants, each with a full pool of ``size / SPREAD`` spares and as many members
    holding API tokens: the token storm again, over several tenant locks."""
    from django.contrib.auth import get_user_model

    from tenants.choices import Role
    from tenants.models import Membership
    from tenants.scoping import tenant_scope
    from tenants.services import tenant_create

    User = get_user_model()
    members, names = [], []
    for n in range(SPREAD):
        count = len(range(n, size, SPREAD))
        if not count:
            continue
        tenant = tenant_create(slug=f"spread-{n}", name=f"Spread {n}")
        pool = make_pool(tenant, image, "Office", count)
        names += seed_spares(conn, pool, hosts, count)
        users = User.objects.bulk_create(User(username=f"spread{n}-{k:04d}")
                                         for k in range(count))
        with tenant_scope(tenant):
            Membership.objects.bulk_create(
                Membership(tenant=tenant, user=user, role=Role.MEMBER) for user in users)
        members += [(user, tenant, pool) for user in users]
    return members, names


def make_pool(tenant, image, name: str, spares: int):
    """A pool that is full with its spares: ``min_ready`` = ``max_desktops`` = ``spares``, so
    the autoscaler (which runs after every Connect) neither trims the spares nor provisions
    new ones while the storm runs: refilling a pool is benchmark 2's subject."""
    from tenants.scoping import tenant_scope
    from vdi.models import Pool
    from vdi.services import pool_create

    with tenant_scope(tenant):
        pool = pool_create(tenant=tenant, actor=None, name=name, image=image, min_ready=0,
                           max_desktops=spares, memory_mb=256, protocol="spice")
        # Set after the spares exist (seed_spares); until then the autoscaler must not make
        # them itself.
        Pool.objects.filter(pk=pool.pk).update(min_ready=spares)
    return pool


def seed_spares(conn, pool, hosts, count: int, define: bool = True) -> list[str]:
    """``count`` running, unassigned desktops: rows, and (``define``) their domains defined
    from the product's domain XML and started in the test driver."""
    from hypervisors.domain_xml import build_domain_xml
    from hypervisors.networks import tenant_network_ensure
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop
    from vdi.services.executors import _domain_spec

    with scopes_disabled():
        desktops = Desktop.objects.bulk_create(
            Desktop(tenant=pool.tenant, pool=pool, image=pool.image,
                    name=f"vdi-{uuid.uuid4().hex[:16]}", vcpus=1, memory_mb=256,
                    state="running", host=hosts[n % len(hosts)])
            for n in range(count)
        )
        if define:
            # On the tenant's network of each host, as provisioning would put them.
            attachments = {host.pk: tenant_network_ensure(host=host, tenant=pool.tenant)
                           for host in hosts}
            for desktop in desktops:
                xml = build_domain_xml(_domain_spec(desktop, f"/bench/{desktop.name}.qcow2",
                                                    attachments[desktop.host_id]))
                conn.defineXML(xml).create()
    return [desktop.name for desktop in desktops]


def issue_tokens(users) -> dict[str, str]:
    from knox.models import AuthToken

    return {user.username: AuthToken.objects.create(user=user)[1] for user in users}


def storm(targets: list[tuple[str, str]], clients: int, tokens: dict[str, str] | None) -> dict:
    """``clients`` threads start together and work through the (user, Connect URL) targets:
    log in (when no token was issued), then Connect; a pending answer is followed to its
    ticket as the API says."""
    import requests

    work: queue.SimpleQueue = queue.SimpleQueue()
    for index, (username, url) in enumerate(targets):
        work.put((index, username, url))
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()
    records: list[dict] = []

    def client() -> None:
        http = requests.Session()
        start.wait()
        while True:
            try:
                index, username, url = work.get_nowait()
            except queue.Empty:
                return
            base = url.split("/api/")[0]
            # Each user from an address of their own, as behind one reverse proxy.
            headers = {"X-Forwarded-For": f"10.{index >> 16 & 255}.{index >> 8 & 255}."
                                          f"{index & 255}"}
            record = {"user": username, "login_s": None}
            began = time.perf_counter()
            try:
                if tokens is None:
                    answer = http.post(f"{base}/api/v1/auth/token/", headers=headers,
                                       json={"username": username, "password": PASSWORD},
                                       timeout=300)
                    record["login_status"] = answer.status_code
                    record["login_s"] = time.perf_counter() - began
                    if answer.status_code != 200:
                        raise RuntimeError(f"login {answer.status_code}: {answer.text[:200]}")
                    token = answer.json()["token"]
                else:
                    token = tokens[username]
                headers["Authorization"] = f"Token {token}"
                asked = time.perf_counter()
                answer = http.post(url, headers=headers, timeout=300)
                record["status"] = answer.status_code
                body = answer.json()
                deadline = time.monotonic() + 120
                while answer.status_code == 202 and time.monotonic() < deadline:
                    time.sleep(float(body.get("retry_after") or 1))
                    answer = http.post(f"{url.split('/pools/')[0]}/sessions/{body['session']}"
                                       "/ticket/", headers=headers, timeout=300)
                    body = answer.json() if answer.status_code in (200, 202) else body
                record["final_status"] = answer.status_code
                record["desktop"] = body.get("desktop")
                record["connect_s"] = time.perf_counter() - asked
                record["total_s"] = time.perf_counter() - began
            except Exception as error:  # noqa: BLE001 - counted and shown below
                record["error"] = str(error)[:300]
            with lock:
                records.append(record)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began

    tickets = [r for r in records if r.get("final_status") == 200]
    first_200 = [r for r in records if r.get("status") == 200]
    errors = [r for r in records if "error" in r or r.get("final_status") != 200]
    desktops = [r["desktop"] for r in tickets]
    logins = [r["login_s"] for r in records if r["login_s"] is not None]
    return {
        "connects": len(targets),
        "clients": clients,
        "wall_s": round(wall, 2),
        "tickets": len(tickets),
        "tickets_first_answer": len(first_200),
        "pending_first_answer": sum(1 for r in records if r.get("status") == 202),
        "failed": len(errors),
        "failures_sample": [r.get("error") or r.get("final_status") for r in errors[:5]],
        "tickets_per_s": round(len(tickets) / wall, 2),
        "connect_latency": latency_summary([r["connect_s"] for r in tickets]),
        "login_latency": latency_summary(logins) if logins else None,
        "total_latency": latency_summary([r["total_s"] for r in tickets]),
        "same_desktop_twice_in_answers": len(desktops) - len(set(desktops)),
    }


def warm_up(base: str, slug: str, token: str) -> None:
    """A served site is warm: every web thread has run a request (imports, URL resolver,
    its database connection) before the storm."""
    import requests

    def fetch(_):
        answer = requests.get(f"{base}/api/v1/tenants/{slug}/pools/", timeout=60,
                              headers={"Authorization": f"Token {token}"})
        answer.raise_for_status()

    with ThreadPoolExecutor(WEB_WORKERS * WEB_THREADS) as threads:
        list(threads.map(fetch, range(WEB_WORKERS * WEB_THREADS * 2)))


def handed_out_twice() -> int:
    """Desktops that the database shows in sessions of more than one user."""
    from django.db.models import Count

    from brokers.models import Session
    from tenants.scoping import scopes_disabled

    with scopes_disabled():
        return (Session.objects.exclude(desktop=None).values("desktop")
                .annotate(users=Count("user", distinct=True)).filter(users__gt=1).count())


def password_hash_cost() -> dict:
    """One password check at the configured (production) hasher's full cost."""
    from django.contrib.auth.hashers import check_password, get_hasher, make_password

    hasher = get_hasher()
    encoded = make_password(PASSWORD)
    timings = []
    for _ in range(3):
        began = time.perf_counter()
        assert check_password(PASSWORD, encoded)
        timings.append(time.perf_counter() - began)
    return {"algorithm": hasher.algorithm, "iterations": getattr(hasher, "iterations", None),
            "check_ms": round(statistics.median(timings) * 1000, 1)}


# --- the floor ------------------------------------------------------------------------------
def _insert(model, values: dict) -> tuple[str, callable]:
    """An INSERT of every column of ``model``: the given values, else the model's defaults."""
    from django.db import connection
    from django.utils import timezone

    fields = model._meta.concrete_fields
    sql = (f"INSERT INTO {model._meta.db_table} ({', '.join(f.column for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")

    def params(**given):
        now = timezone.now()
        row = []
        for field in fields:
            if field.attname in given:
                value = given[field.attname]
            elif getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
                value = now
            elif field.has_default():
                value = field.get_default()
            else:
                value = None
            value = field.get_db_prep_save(value, connection)
            row.append(str(value) if isinstance(value, uuid.UUID) else value)
        return row

    return sql, params


def floor(tenant, pool, users, connections: int, lock_tenant: bool = True) -> dict:
    """The connect transaction alone, bare psycopg2: lock the tenant, claim a spare, insert
    the session and its ticket; ``connections`` at once, each user once. Without
    ``lock_tenant``, what the same claims cost when they need not queue on the tenant row."""
    import psycopg2
    from django.conf import settings
    from django.utils import timezone

    from brokers.models import ConnectionTicket, Session

    db = settings.DATABASES["default"]
    dsn = dict(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None,
               host=db["HOST"], port=db["PORT"] or 5432)
    session_sql, session_params = _insert(Session, {})
    ticket_sql, ticket_params = _insert(ConnectionTicket, {})
    work: queue.SimpleQueue = queue.SimpleQueue()
    for user in users:
        work.put(user.pk)
    start = threading.Barrier(connections + 1)
    timings: list[float] = []
    claimed: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        conn = psycopg2.connect(**dsn)
        cursor = conn.cursor()
        start.wait()
        while True:
            try:
                user_id = work.get_nowait()
            except queue.Empty:
                break
            began = time.perf_counter()
            if lock_tenant:
                cursor.execute("SELECT id FROM tenants_tenant WHERE id = %s FOR UPDATE",
                               [str(tenant.pk)])
            cursor.execute(
                "SELECT id FROM vdi_desktop WHERE pool_id = %s AND state = 'running' "
                "AND assigned_user_id IS NULL ORDER BY created_at LIMIT 1 "
                "FOR UPDATE SKIP LOCKED", [str(pool.pk)])
            desktop_id = cursor.fetchone()[0]
            cursor.execute("UPDATE vdi_desktop SET assigned_user_id = %s "
                           "WHERE id = %s AND assigned_user_id IS NULL", [user_id, desktop_id])
            session_id = uuid.uuid4()
            now = timezone.now()
            cursor.execute(session_sql, session_params(
                id=session_id, tenant_id=tenant.pk, pool_id=pool.pk, desktop_id=desktop_id,
                user_id=user_id, state="ready", ready_at=now))
            cursor.execute(ticket_sql, ticket_params(
                id=uuid.uuid4(), tenant_id=tenant.pk, session_id=session_id,
                desktop_id=desktop_id, kind="native", protocol="spice", host="127.0.0.1",
                issued_by_id=user_id, expires_at=now + timedelta(seconds=120)))
            conn.commit()
            with lock:
                timings.append(time.perf_counter() - began)
                claimed.append(str(desktop_id))
        conn.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {"transactions": len(timings), "connections": connections,
            "wall_s": round(wall, 3), "per_s": round(len(timings) / wall, 1),
            "latency": latency_summary(timings),
            "same_desktop_twice": len(claimed) - len(set(claimed))}


def profile_connects(pool, users) -> dict:
    """Connects one after another in this process, nobody else connecting: the queries one
    makes, and its time split into the transaction (under the tenant lock) and the ticket
    (the round trip to a worker that sets the password)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # The module whose session_connect looks ticket_issue up: the timer replaces it there.
    from brokers.services import connect as services
    from tenants.scoping import tenant_scope

    issue = services.ticket_issue
    ticket_times: list[float] = []

    def timed_issue(**kwargs):
        began = time.perf_counter()
        try:
            return issue(**kwargs)
        finally:
            ticket_times.append(time.perf_counter() - began)

    totals, queries = [], []
    services.ticket_issue = timed_issue
    try:
        for user in users:
            with CaptureQueriesContext(connection) as captured, tenant_scope(pool.tenant):
                began = time.perf_counter()
                services.session_connect(user=user, pool=pool)
                totals.append(time.perf_counter() - began)
            queries.append(len(captured))
            statements = [query["sql"][:160] for query in captured.captured_queries]
    finally:
        services.ticket_issue = issue
    transaction = [total - ticket for total, ticket in zip(totals, ticket_times)]
    return {"connects": len(totals), "queries": statistics.median(queries),
            "total_ms": round(statistics.median(totals) * 1000, 1),
            "transaction_ms": round(statistics.median(transaction) * 1000, 1),
            "ticket_ms": round(statistics.median(ticket_times) * 1000, 1),
            "statements_of_the_last": statements}


def run_storms(clients: int, tenant, pools, token_users, login_users, spread, tokens,
               profiled) -> tuple[dict, dict, dict]:
    """Start the product, run the storms and profile single Connects; returns the runs, the
    processes' memory and the profile."""
    web, base = gunicorn(WEB_WORKERS, WEB_THREADS, wait=False)
    console = celery_worker("console", "console", "threads", 8, wait=False)
    work = celery_worker("vdi", "vdi", "prefork", 1, wait=False)
    services = [web, console, work]

    def connect_url(tenant, pool) -> str:
        return f"{base}/api/v1/tenants/{tenant.slug}/pools/{pool.pk}/connect/"

    storms = (
        ("with-tokens", [(u.username, connect_url(tenant, pools["with-tokens"]))
                         for u in token_users], tokens),
        (f"with-tokens, {SPREAD} tenants", [(u.username, connect_url(t, p))
                                            for u, t, p in spread], tokens),
        ("with-login", [(u.username, connect_url(tenant, pools["with-login"]))
                        for u in login_users], None),
    )
    try:
        wait_ready(*services)
        meter = CpuMeter(web=web.processes, workers=lambda: console.processes()
                         + work.processes(), postgres=postgres_processes)
        warm_up(base, tenant.slug, tokens[token_users[0].username])
        web_worker = web.processes()[1]
        rss = {"at_rest": {"web_worker": rss_mb(web_worker),
                           "console_worker": rss_mb(console.psutil)}}
        runs = {}
        for name, targets, issued in storms:
            say(f"run {name}: {len(targets)} connects")
            meter.start()
            run = storm(targets, clients, issued)
            cpu = meter.stop()
            tickets = max(run["tickets"], 1)
            run["cpu_s"] = cpu
            run["cpu_ms_per_connect"] = {
                group: round(seconds / tickets * 1000, 1) for group, seconds in cpu.items()
            } | {"total": round(sum(cpu.values()) / tickets * 1000, 1)}
            say(f"{name}: {run['tickets']} tickets in {run['wall_s']} s, "
                f"{run['tickets_per_s']}/s, p50 {run['connect_latency']['p50_ms']} ms")
            runs[name] = run
        rss["after"] = {"web_worker": rss_mb(web_worker),
                        "console_worker": rss_mb(console.psutil)}
        return runs, rss, profile_connects(pools["with-tokens"], profiled)
    finally:
        for service in services:
            service.stop()


def main() -> None:
    args = arguments(__doc__.splitlines()[0], size=1000, clients=200)
    clients = min(args.clients, args.size)
    configure()
    require_libvirtd()
    say(f"login storm: {args.size} connects from {clients} clients, twice")
    database_reset()
    redis_flush()
    django_setup()

    from django.contrib.auth import get_user_model
    from django.db import connection

    from tenants.services import membership_add

    with keeper() as conn:
        tenant, image, hosts, token_users, login_users = seed_world(args.size)
        # The tokens pool has spares for the Connects profiled at the end.
        profiled_count = min(PROFILED, args.size)
        spares = {"with-tokens": args.size + profiled_count, "with-login": args.size,
                  "floor": args.size, "floor-unlocked": args.size}
        pools = {name: make_pool(tenant, image, name, count) for name, count in spares.items()}
        names: list[str] = []
        try:
            for name in ("with-tokens", "with-login"):
                names += seed_spares(conn, pools[name], hosts, spares[name])
            for name in ("floor", "floor-unlocked"):
                seed_spares(conn, pools[name], hosts, args.size, define=False)
            spread, spread_names = seed_spread(conn, image, hosts, args.size)
            names += spread_names
            tokens = issue_tokens(token_users + [user for user, _, _ in spread])
            profiled = []
            for n in range(profiled_count):
                profiled.append(get_user_model().objects.create_user(f"profiled{n}"))
                membership_add(tenant=tenant, user=profiled[-1])
            connection.close()
            runs, rss, profile = run_storms(clients, tenant, pools, token_users, login_users,
                                            spread, tokens, profiled)
        finally:
            test_driver_remove(conn, set(names))
    twice = handed_out_twice()
    connections = WEB_WORKERS * WEB_THREADS
    say(f"floor: the same transaction, bare psycopg2, {connections} connections")
    bare = floor(tenant, pools["floor"], token_users, connections)
    unlocked = floor(tenant, pools["floor-unlocked"], token_users, connections,
                     lock_tenant=False)
    hash_cost = password_hash_cost()

    product = runs["with-tokens"]["tickets_per_s"]
    ratio = round(bare["per_s"] / product, 1) if product else None
    result = {
        "size": args.size, "clients": clients, "hosts": HOSTS,
        "web": {"workers": WEB_WORKERS, "threads": WEB_THREADS, "server": "gunicorn gthread"},
        "celery": {"console": "threads x8 (queue console)", "vdi": "prefork x1 (queue vdi)"},
        "runs": runs,
        "handed_out_twice": twice,
        "password_hash": hash_cost,
        "profiled_connects": profile,
        "floor": bare,
        "floor_ratio": ratio,
        "floor_without_tenant_lock": unlocked,
        "rss_mb": rss,
    }
    path = write_result("login_storm", result, args.out)
    login = runs["with-login"]
    say(f"results: {path}")
    print(f"desktops handed out twice: {twice}; one PBKDF2 check: {hash_cost['check_ms']} ms; "
          f"with login: {login['tickets_per_s']} tickets/s "
          f"(p50 {login['total_latency']['p50_ms']} ms)")
    print(f"login storm: {product} tickets/s with tokens (p50 "
          f"{runs['with-tokens']['connect_latency']['p50_ms']} ms, p99 "
          f"{runs['with-tokens']['connect_latency']['p99_ms']} ms); floor {bare['per_s']} "
          f"transactions/s: the product takes {ratio}x the floor's time")


if __name__ == "__main__":
    main()
