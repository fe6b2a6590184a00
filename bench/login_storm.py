"""Benchmark 1: the login storm, as an open-loop sweep of Connect rates.

Users arrive at fixed rates (bench/openloop.py: request i starts at t0 + i / rate whatever
the server answered so far, latency from that intended start) and press Connect (POST
pools/{id}/connect/) with an API token issued beforehand; a pending answer is followed to its
ticket. Each step holds one rate for ``--step-seconds``; each user connects once per step.
Between steps the run drains (the client's last answer, the Celery queues empty, the servers
idle) and resets with SQL (every session ended, every desktop a ready spare again), so the
same users and desktops serve every step. Two sweeps: one tenant, and ten tenants (the same
users, each a member of one of them, and a pool in each).

The product: gunicorn, Celery workers, PostgreSQL, Redis, and simulated hosts (libvirt's
test driver inside libvirtd): each ticket is a round trip to a worker on the ``console``
queue that asks libvirtd to set the console password (the test driver refuses, and the
ticket comes back marked simulated). The floor: bench/floor_server.py, a WSGI app with no
framework on the same gunicorn set-up, which looks the token up, claims a spare and writes
the session and ticket rows in one transaction, and makes the driver's password calls on the
same simulated hosts; swept by the same client on the same pools, users and desktops.

Per step: offered and achieved rate, latency percentiles, errors, CPU per connect of the
web tier, the workers, PostgreSQL, Redis, libvirtd and the client. The headline: the
highest rate sustained (p99 at most 250 ms, no error), for one tenant and for ten, for the
product and the floor, and their ratio. Then users who log in with their password first
(POST auth/token/, PBKDF2 at full cost), open loop at one modest rate for one step.

    .venv/bin/python -m bench.login_storm [--rates 10,20,30,50,100,150,200,300,400,600]
        [--step-seconds 30] [--login-rate 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import (
    DATA_DIR, DATABASE_URL, PYTHON, REDIS_URL, ROOT, CpuMeter, celery_worker, configure,
    cpu_seconds, database_reset, django_setup, gunicorn, keeper,
    postgres_processes, processes_named, redis_flush, require_libvirtd, rss_mb, say,
    test_driver_remove, wait_ready, write_result,
)
from bench.storm_world import (
    HOSTS, PASSWORD, SPREAD, World, floor_statements, forwarded_for,
    handed_out_twice, reset, seed,
)

RATES = (10, 20, 30, 50, 100, 150, 200, 300, 400, 600)
STEP_SECONDS = 30.0
LOGIN_RATE = 5.0
P99_LIMIT_MS = 250.0
TIMEOUT_S = 30.0  # a request unanswered this long after its intended start is a time-out
FAILED_STEPS_TO_STOP = 2  # a sweep stops after this many unsustained steps in a row
CLIENT_CONNECTIONS = 4096
WEB_WORKERS, WEB_THREADS = 2, 8
QUEUES = ("console", "vdi", "celery")
# The per-tenant API budget (3000/min by default) would refuse one tenant's storm above
# 50 connects/s sustained: it is turned off here so the sweep measures capacity. The user
# and login throttles stay at their production defaults.
THROTTLES = {"VDI_THROTTLE_TENANT": ""}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda text: [int(rate) for rate in text.split(",")],
                        help="arrival rates of the steps, connects/s (default "
                             f"{','.join(map(str, RATES))})")
    parser.add_argument("--step-seconds", type=float,
                        help=f"how long each rate is held (default {STEP_SECONDS:g})")
    parser.add_argument("--size", type=int,
                        help="a quick trial (bench/run's BENCH_ARGS): unless given, rates "
                             "SIZE and 2 x SIZE connects/s, 2 s each")
    parser.add_argument("--login-rate", type=float, default=LOGIN_RATE,
                        help="arrival rate of the password logins, one step "
                             "(default %(default)s)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds after its intended start a request times out "
                             "(default %(default)s)")
    parser.add_argument("--every-step", action="store_true",
                        help=f"run every rate, even after {FAILED_STEPS_TO_STOP} steps in a "
                             "row that were not sustained")
    parser.add_argument("--out", default="",
                        help="results file (default bench/results/login_storm.json)")
    args = parser.parse_args()
    if args.size:
        args.rates = args.rates or [args.size, 2 * args.size]
        args.step_seconds = args.step_seconds or 2.0
    args.rates = sorted(set(args.rates or RATES))
    args.step_seconds = args.step_seconds or STEP_SECONDS
    return args


# --- one step ----------------------------------------------------------------------------------


def run_client(requests: list[dict], rate: float, timeout_s: float) -> dict:
    """The open-loop client, in a process of its own, over one step."""
    plan, out = DATA_DIR / "openloop-plan.json", DATA_DIR / "openloop-result.json"
    plan.write_text(json.dumps({"rate": rate, "timeout_s": timeout_s,
                                "connections": CLIENT_CONNECTIONS, "requests": requests}))
    subprocess.run([PYTHON, "-m", "bench.openloop", str(plan), str(out)], cwd=ROOT,
                   check=True)
    return json.loads(out.read_text())


def drain(processes, timeout_s: float = 300) -> float:
    """Wait until the step's queued work is done: the Celery queues empty and ``processes``
    idle (under 5 % of a core over two half-second samples in a row). Seconds waited."""
    import redis

    broker = redis.Redis.from_url(REDIS_URL)
    began = time.monotonic()
    before, quiet = cpu_seconds(processes()), 0
    while quiet < 2 and time.monotonic() - began < timeout_s:
        time.sleep(0.5)
        now = cpu_seconds(processes())
        idle = now - before < 0.025 and not any(broker.llen(queue) for queue in QUEUES)
        quiet, before = (quiet + 1 if idle else 0), now
    return round(time.monotonic() - began, 2)


def sustained(step: dict) -> bool:
    p99 = step["latency"]["p99_ms"]
    return step["errors"] == 0 and isinstance(p99, (int, float)) and p99 <= P99_LIMIT_MS


def measured_step(world: World, requests: list[dict], rate: float, timeout_s: float,
                  meter: CpuMeter, busy) -> dict:
    """One step: the client at ``rate``, then the drain (its work counts in the step's CPU),
    the checks and the reset."""
    from django.utils import timezone

    since = timezone.now()
    meter.start()
    step = run_client(requests, rate, timeout_s)
    step["drain_s"] = drain(busy)
    cpu = meter.stop()
    tickets = max(step["tickets"], 1)
    step["cpu_s"] = cpu | {"client": step["client_cpu_s"]}
    step["cpu_ms_per_connect"] = {
        group: round(seconds / tickets * 1000, 2) for group, seconds in step["cpu_s"].items()
    } | {"servers": round(sum(cpu.values()) / tickets * 1000, 2)}
    step["handed_out_twice"] = handed_out_twice(since)
    step["load_avg_1m"] = round(os.getloadavg()[0], 2)
    step["sustained"] = sustained(step)
    step |= reset(world)
    return step


def sweep(name: str, world: World, rates: list[int], step_s: float, timeout_s: float,
          requests_for, meter: CpuMeter, busy, every_step: bool) -> dict:
    """Steps of rising rates, each user at most once a step; stops after
    FAILED_STEPS_TO_STOP unsustained steps in a row unless ``every_step``."""
    steps, failed = [], 0
    for rate in rates:
        requests = requests_for(round(rate * step_s))
        step = measured_step(world, requests, rate, timeout_s, meter, busy)
        latency = step["latency"]
        say(f"{name} at {rate}/s: {step['achieved_per_s']}/s achieved, p50 "
            f"{latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, {step['errors']} errors, "
            f"{step['cpu_ms_per_connect']['servers']} ms server CPU per connect, drained in "
            f"{step['drain_s']} s")
        steps.append(step)
        failed = 0 if step["sustained"] else failed + 1
        if failed >= FAILED_STEPS_TO_STOP and not every_step and rate != rates[-1]:
            say(f"{name}: {failed} steps in a row not sustained; higher rates skipped")
            break
    best = max((step["offered_per_s"] for step in steps if step["sustained"]), default=None)
    return {"steps": steps, "sustained_per_s": best}


# --- the product ---------------------------------------------------------------------------
def warm_up(base: str, path: str, token: str | None = None) -> None:
    """A served site is warm: every web thread has run a request (imports, URL resolver,
    its database connection) before the storm."""
    import requests

    headers = {"Authorization": f"Token {token}"} if token else {}

    def fetch(_):
        requests.get(f"{base}{path}", timeout=60, headers=headers).raise_for_status()

    with ThreadPoolExecutor(WEB_WORKERS * WEB_THREADS) as threads:
        list(threads.map(fetch, range(WEB_WORKERS * WEB_THREADS * 2)))


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


def connect_requests(world: World, base: str, spread: bool, floor: bool = False):
    """The step's requests for its first ``count`` users: each to the one tenant's pool, or
    (``spread``) to their spread tenant's."""
    def url(tenant, pool) -> str:
        if floor:
            return f"{base}/floor/pools/{pool.pk}/connect/"
        return f"{base}/api/v1/tenants/{tenant.slug}/pools/{pool.pk}/connect/"

    single = url(world.tenant, world.pool)
    spread_urls = [url(tenant, pool) for tenant, pool in world.spread]

    def requests_for(count: int) -> list[dict]:
        return [{"url": spread_urls[n % SPREAD] if spread else single,
                 "forwarded_for": forwarded_for(n), "token": world.tokens[user.username]}
                for n, user in enumerate(world.users[:count])]

    return requests_for


def login_requests(world: World, base: str, count: int) -> list[dict]:
    offset = len(world.users)
    return [{"url": f"{base}/api/v1/tenants/{world.tenant.slug}/pools/{world.login_pool.pk}"
                    "/connect/",
             "forwarded_for": forwarded_for(offset + n),
             "login": {"url": f"{base}/api/v1/auth/token/", "username": user.username,
                       "password": PASSWORD}}
            for n, user in enumerate(world.login_users[:count])]


def shared_groups() -> dict:
    return {"postgres": postgres_processes, "redis": processes_named("redis-server"),
            "libvirtd": processes_named("libvirtd")}


def one_and_ten_tenants(target: str, world: World, args, base: str, meter, busy) -> dict:
    """The sweep of ``target`` (the product or the floor) in one tenant, then over ten."""
    sweeps = {}
    for tenants, spread in ((1, False), (SPREAD, True)):
        name = f"{target}, {tenants} tenant{'s' if tenants > 1 else ''}"
        say(f"sweep {name}: rates {args.rates}/s, {args.step_seconds:g} s each")
        sweeps[name] = {"target": target, "tenants": tenants} | sweep(
            name, world, args.rates, args.step_seconds, args.timeout,
            connect_requests(world, base, spread, floor=target == "floor"), meter, busy,
            args.every_step)
    return sweeps


def run_product(world: World, args) -> dict:
    """Start the product, sweep one tenant and ten, run the password logins and profile
    single Connects."""
    web, base = gunicorn(WEB_WORKERS, WEB_THREADS, wait=False)
    console = celery_worker("console", "console", "threads", 8, wait=False)
    work = celery_worker("vdi", "vdi", "prefork", 1, wait=False)
    services = [web, console, work]
    try:
        wait_ready(*services)

        def workers():
            return console.processes() + work.processes()

        def busy():
            return web.processes() + workers() + postgres_processes()

        meter = CpuMeter(web=web.processes, workers=workers, **shared_groups())
        warm_up(base, f"/api/v1/tenants/{world.tenant.slug}/pools/",
                world.tokens[world.users[0].username])
        web_worker = web.processes()[1]
        rss = {"at_rest": {"web_worker": rss_mb(web_worker),
                           "console_worker": rss_mb(console.psutil)}}
        sweeps = one_and_ten_tenants("product", world, args, base, meter, busy)
        logins = round(args.login_rate * args.step_seconds)
        say(f"password logins: {logins} at {args.login_rate:g}/s")
        login = measured_step(world, login_requests(world, base, logins), args.login_rate,
                              args.timeout, meter, busy)
        say(f"logins at {args.login_rate:g}/s: p50 {login['latency']['p50_ms']} ms, "
            f"{login['errors']} errors")
        rss["after"] = {"web_worker": rss_mb(web_worker),
                        "console_worker": rss_mb(console.psutil)}
        profile = profile_connects(world.pool, world.profiled)
        reset(world)
        return {"sweeps": sweeps, "login": login, "rss_mb": rss,
                "profiled_connects": profile}
    finally:
        for service in services:
            service.stop()


# --- the floor ---------------------------------------------------------------------------------


def run_floor(world: World, args) -> dict:
    """The floor server on the same gunicorn set-up, swept like the product."""
    statements = DATA_DIR / "floor-statements.json"
    statements.write_text(json.dumps(floor_statements(world), indent=2))
    web, base = gunicorn(WEB_WORKERS, WEB_THREADS, app="bench.floor_server:app",
                         health="/floor/healthz", name="floor",
                         env={"FLOOR_DSN": DATABASE_URL, "FLOOR_STATEMENTS": str(statements)})
    try:
        def busy():
            return web.processes() + postgres_processes()

        meter = CpuMeter(web=web.processes, workers=lambda: [], **shared_groups())
        warm_up(base, "/floor/healthz")
        sweeps = one_and_ten_tenants("floor", world, args, base, meter, busy)
        return sweeps
    finally:
        web.stop()


def headline(sweeps: dict) -> dict:
    """The highest rate each sustained, and the product's as a fraction of the floor's."""
    figures = {}
    for key, tenants in (("one_tenant", 1), ("ten_tenants", SPREAD)):
        product, floor = (next(s["sustained_per_s"] for s in sweeps.values()
                               if s["target"] == target and s["tenants"] == tenants)
                          for target in ("product", "floor"))
        figures[key] = {"product_per_s": product, "floor_per_s": floor,
                        "product_to_floor": round(product / floor, 3)
                        if product and floor else None}
    return figures


def main() -> None:
    args = parse_arguments()
    users_count = math.ceil(max(args.rates) * args.step_seconds)
    logins_count = math.ceil(args.login_rate * args.step_seconds)
    configure(**THROTTLES)
    require_libvirtd()
    say(f"login storm: open-loop steps at {args.rates} connects/s, {args.step_seconds:g} s "
        f"each, over {users_count} users")
    database_reset()
    redis_flush()
    django_setup()

    from django.db import connection

    with keeper() as conn:
        began = time.perf_counter()
        world = seed(conn, users_count, logins_count)
        seed_s = round(time.perf_counter() - began, 1)
        say(f"seeded {users_count} users with tokens and {len(world.domains)} spares in "
            f"{seed_s} s")
        connection.close()
        try:
            product = run_product(world, args)
            floor = run_floor(world, args)
        finally:
            test_driver_remove(conn, set(world.domains))
    sweeps = product.pop("sweeps") | floor
    figures = headline(sweeps)
    steps = [step for s in sweeps.values() for step in s["steps"]] + [product["login"]]
    result = {
        "rates": args.rates, "step_seconds": args.step_seconds, "timeout_s": args.timeout,
        "p99_limit_ms": P99_LIMIT_MS, "users": users_count, "hosts": HOSTS,
        "spares": len(world.domains), "seed_s": seed_s,
        "web": {"workers": WEB_WORKERS, "threads": WEB_THREADS, "server": "gunicorn gthread"},
        "celery": {"console": "threads x8 (queue console)", "vdi": "prefork x1 (queue vdi)"},
        "floor_server": "bench/floor_server.py on gunicorn gthread, "
                        f"{WEB_WORKERS} workers x {WEB_THREADS} threads",
        "throttles": {"tenant": "off", "user": "production default",
                      "login": "production default"},
        "client": f"bench/openloop.py: one asyncio process, aiohttp, up to "
                  f"{CLIENT_CONNECTIONS} connections",
        "headline": figures,
        "floor_ratio": figures["one_tenant"]["product_to_floor"],
        "sweeps": sweeps,
        "handed_out_twice": sum(step["handed_out_twice"] for step in steps),
        "same_desktop_twice_in_answers": sum(step["same_desktop_twice_in_answers"]
                                             for step in steps),
        "password_hash": password_hash_cost(),
        **product,
    }
    path = write_result("login_storm", result, args.out)
    say(f"results: {path}")
    one, ten = figures["one_tenant"], figures["ten_tenants"]
    login = product["login"]
    print(f"desktops handed out twice: {result['handed_out_twice']}; password logins at "
          f"{args.login_rate:g}/s: p50 {login['latency']['p50_ms']} ms, "
          f"{login['errors']} errors")
    print(f"login storm: sustained (p99 <= {P99_LIMIT_MS:g} ms, no errors) "
          f"{one['product_per_s']} connects/s with one tenant, {ten['product_per_s']} with "
          f"ten; floor {one['floor_per_s']} and {ten['floor_per_s']}: the product sustains "
          f"{one['product_to_floor']} and {ten['product_to_floor']} of the floor's rate")


if __name__ == "__main__":
    main()
