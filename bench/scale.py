"""Benchmark 4: the database at scale.

Seeded with bulk_create: 100 hosts, 1,000 tenants (one pool and ten users each), 10,000
desktops with their provisioning operations and 100,000 past sessions (``--size`` is the
tenant count; the rest scales with it). One tenant, ``big``, is a hundred times the others:
1,000 desktops and 10,000 sessions. Measured in process through Django's test client, with
real API tokens and a real portal login: p50/p99 and query counts of the main API lists (as
the big tenant's admin, and the host list as staff) and of the portal dashboard; then one
reconciliation pass over every host with 100 domains each.

Reconciliation gets each host's domain listing from a stub at the driver boundary
(``host_reconcile(driver=…)``): libvirt's test driver keeps one state per daemon, so ten
thousand domains would be listed on every host. The stub answers what libvirt would: every
desktop's domain, running.

The floor: the desktops page's own SQL (the page of 50 and its count) run bare with
psycopg2.

    .venv/bin/python -m bench.scale [--size 1000] [--repeat 30]
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta

from bench.common import (
    arguments, collect_static, configure, database_reset, django_setup, latency_summary,
    redis_flush, say, write_result,
)

PASSWORD = "a long passphrase nobody guesses"
BIG = 100  # the big tenant is this many times an ordinary one


class StubDriver:
    """The driver boundary for reconciliation: a fixed domain listing."""

    def __init__(self, domains):
        self.domains = domains

    def list_domains(self):
        return self.domains


def seed(tenants: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from brokers.models import Session
    from hypervisors.choices import HostState
    from hypervisors.models import Host
    from tenants.choices import Role
    from tenants.models import Membership, Tenant
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop, Image, Operation, Pool

    hosts_count = max(2, tenants // 10)
    began = time.perf_counter()
    batch = 5000
    with scopes_disabled():
        hosts = Host.objects.bulk_create(
            Host(name=f"kvm-{n:03d}", uri=f"qemu+tls://kvm-{n:03d}.example.com/system",
                 virt_type="kvm", console_address=f"kvm-{n:03d}.example.com",
                 state=HostState.UP, cpus=64, memory_mb=512 * 1024)
            for n in range(hosts_count))
        image = Image.objects.create(name="win11", version=1, base_volume="win11.qcow2")
        rows = Tenant.objects.bulk_create(
            Tenant(slug="big" if n == 0 else f"t{n:04d}", name=f"Tenant {n}")
            for n in range(tenants))
        encoded = make_password(PASSWORD)
        User = get_user_model()
        weights = [BIG if n == 0 else 1 for n in range(tenants)]
        users = User.objects.bulk_create(
            (User(username=f"{tenant.slug}-u{k}", password=encoded)
             for tenant, weight in zip(rows, weights) for k in range(10 * weight)),
            batch_size=batch)
        by_tenant: dict = {}
        for user in users:
            by_tenant.setdefault(user.username.split("-u")[0], []).append(user)
        Membership.objects.bulk_create(
            (Membership(tenant=tenant, user=user, role=Role.ADMIN if k == 0 else Role.MEMBER)
             for tenant in rows for k, user in enumerate(by_tenant[tenant.slug])),
            batch_size=batch)
        pools = Pool.objects.bulk_create(
            Pool(tenant=tenant, name="Office", image=image, min_ready=2, max_desktops=2000)
            for tenant in rows)
        staff = User.objects.create_user("operator", password=PASSWORD, is_staff=True)

        # Desktops: 10 per ordinary tenant, BIG x 10 for the big one; spread over the hosts.
        desktops = []
        for tenant, pool, weight in zip(rows, pools, weights):
            people = by_tenant[tenant.slug]
            for k in range(10 * weight):
                desktops.append(Desktop(
                    tenant=tenant, pool=pool, image=image, name=f"vdi-{uuid.uuid4().hex[:16]}",
                    vcpus=2, memory_mb=4096, state="running",
                    host=hosts[len(desktops) % hosts_count],
                    assigned_user=people[k % len(people)] if k % 2 else None))
        desktops = Desktop.objects.bulk_create(desktops, batch_size=batch)
        now = timezone.now()
        Operation.objects.bulk_create(
            (Operation(tenant_id=d.tenant_id, desktop=d, pool_id=d.pool_id, kind="provision",
                       state="succeeded", params={"start": True}, attempts=1,
                       started_at=now, finished_at=now)
             for d in desktops), batch_size=batch)
        # Past sessions: 10 per desktop, ended.
        people = {tenant.pk: by_tenant[tenant.slug] for tenant in rows}
        Session.objects.bulk_create(
            (Session(tenant_id=d.tenant_id, pool_id=d.pool_id, desktop=d,
                     user=people[d.tenant_id][k % len(people[d.tenant_id])], state="ended",
                     end_reason="user", ready_at=now - timedelta(hours=k + 1),
                     ended_at=now - timedelta(hours=k))
             for d in desktops for k in range(10)),
            batch_size=batch)
    return {
        "hosts": hosts, "big": rows[0], "staff": staff, "admin": by_tenant["big"][0],
        "counts": {"hosts": hosts_count, "tenants": tenants, "users": len(users),
                   "desktops": len(desktops), "operations": len(desktops),
                   "sessions": len(desktops) * 10},
        "seed_s": round(time.perf_counter() - began, 1),
    }


def counting_queries(statements: list[str]):
    """Count the statements run on this thread's connection, across requests (a request's
    start clears Django's own query log)."""
    from django.db import connection

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    return connection.execute_wrapper(count)


def measure(client, path: str, repeat: int) -> dict:
    for _ in range(3):  # warm: imports, caches, the database's buffers
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.content[:300])
    captured: list[str] = []
    with counting_queries(captured):
        client.get(path)
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        client.get(path)
        timings.append(time.perf_counter() - began)
    summary = latency_summary(timings)
    return {"path": path, "queries": len(captured), "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"]}


def reconcile_pass(hosts) -> dict:
    from hypervisors.drivers import PowerState
    from hypervisors.services import host_reconcile
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop

    with scopes_disabled():
        listing: dict = {}
        for host_id, name in Desktop.objects.values_list("host_id", "name"):
            listing.setdefault(host_id, {})[name] = PowerState.RUNNING
    drivers = {host.pk: StubDriver(listing.get(host.pk, {})) for host in hosts}
    captured: list[str] = []
    with counting_queries(captured):
        began = time.perf_counter()
        changed = sum(len(host_reconcile(host=host, driver=drivers[host.pk])) for host in hosts)
        elapsed = time.perf_counter() - began
    domains = sum(len(d.domains) for d in drivers.values())
    return {"hosts": len(hosts), "domains": domains, "elapsed_s": round(elapsed, 3),
            "ms_per_host": round(elapsed / len(hosts) * 1000, 2), "queries": len(captured),
            "changed": changed}


def floor_desktops_page(tenant, repeat: int) -> dict:
    """The desktops list's page and count as two bare SQL statements."""
    import psycopg2
    from django.conf import settings

    db = settings.DATABASES["default"]
    conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None,
                            host=db["HOST"], port=db["PORT"] or 5432)
    cursor = conn.cursor()
    timings = []
    for n in range(repeat + 3):
        began = time.perf_counter()
        cursor.execute("SELECT count(*) FROM vdi_desktop WHERE tenant_id = %s", [str(tenant.pk)])
        cursor.fetchone()
        cursor.execute("SELECT * FROM vdi_desktop WHERE tenant_id = %s "
                       "ORDER BY pool_id, name LIMIT 50", [str(tenant.pk)])
        cursor.fetchall()
        if n >= 3:
            timings.append(time.perf_counter() - began)
    conn.close()
    return {"what": "desktops page: count + 50 rows, bare SQL", **latency_summary(timings)}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], size=1000, repeat=30)
    configure()
    say(f"scale: {args.size} tenants, {10 * (args.size - 1 + BIG)} desktops")
    database_reset()
    redis_flush()
    collect_static()
    django_setup()

    from django.db import connection
    from django.test import Client
    from knox.models import AuthToken

    world = seed(args.size)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    say(f"seeded {world['counts']} in {world['seed_s']} s")
    big = world["big"]
    api = Client(HTTP_HOST="127.0.0.1",
                 HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=world['admin'])[1]}")
    staff = Client(HTTP_HOST="127.0.0.1",
                   HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=world['staff'])[1]}")
    portal = Client(HTTP_HOST="127.0.0.1")
    assert portal.login(username=world["admin"].username, password=PASSWORD)

    prefix = f"/api/v1/tenants/{big.slug}"
    lists = {
        "pools": measure(api, f"{prefix}/pools/", args.repeat),
        "desktops": measure(api, f"{prefix}/desktops/", args.repeat),
        "sessions": measure(api, f"{prefix}/sessions/", args.repeat),
        "operations": measure(api, f"{prefix}/operations/", args.repeat),
        "hosts (staff)": measure(staff, "/api/v1/hosts/", args.repeat),
        "dashboard (portal)": measure(portal, f"/t/{big.slug}/", args.repeat),
    }
    for name, figures in lists.items():
        say(f"{name}: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
            f"{figures['queries']} queries")
    reconcile = reconcile_pass(world["hosts"])
    bare = floor_desktops_page(big, args.repeat)
    ratio = round(lists["desktops"]["p50_ms"] / bare["p50_ms"], 1) if bare["p50_ms"] else None
    result = {"size": args.size, "counts": world["counts"], "seed_s": world["seed_s"],
              "big_tenant": {"desktops": 10 * BIG, "sessions": 100 * BIG},
              "lists": lists, "reconcile": reconcile, "floor": bare, "floor_ratio": ratio,
              "median_list_p50_ms": statistics.median(v["p50_ms"] for v in lists.values())}
    path = write_result("scale", result, args.out)
    say(f"results: {path}")
    per_host = reconcile["domains"] // max(1, reconcile["hosts"])
    print(f"reconciliation: {reconcile['hosts']} hosts x {per_host} domains in "
          f"{reconcile['elapsed_s']} s ({reconcile['queries']} queries)")
    print(f"scale: desktops list p50 {lists['desktops']['p50_ms']} ms, p99 "
          f"{lists['desktops']['p99_ms']} ms ({lists['desktops']['queries']} queries); floor "
          f"{bare['p50_ms']} ms: the product takes {ratio}x the floor's time")


if __name__ == "__main__":
    main()
