"""The login storm's world: tenants, simulated hosts, users with their API tokens and pools of
ready spares, seeded in bulk; the SQL reset between steps; the double hand-out count; and
the floor server's statements, generated from the product's models."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bench.common import host_uri

PASSWORD = "a long passphrase nobody guesses"
HOSTS = 10
SPREAD = 10  # tenants in the second sweep
PROFILED = 10  # Connects profiled one by one after the product's sweeps


@dataclass
class World:
    """What the sweeps run on: ``users`` (with ``tokens``) are members of ``tenant`` and
    each of one ``spread`` tenant (user k of the k % SPREAD-th); ``pool`` is the one-tenant
    sweep's, with PROFILED spares more for the ``profiled`` users."""

    tenant: object
    pool: object
    login_pool: object
    spread: list  # (tenant, pool) for each spread tenant
    users: list
    login_users: list
    profiled: list
    tokens: dict
    hosts: list
    domains: list

    @property
    def pools(self) -> list:
        return [self.pool, self.login_pool, *(pool for _, pool in self.spread)]


def seed(conn, users_count: int, logins_count: int) -> World:
    """Tenants, the simulated hosts, users with their memberships and tokens, and a full
    pool of ready spares for every sweep, in bulk."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from hypervisors.choices import HostState
    from hypervisors.models import Host
    from tenants.choices import Role
    from tenants.models import Membership
    from tenants.scoping import scopes_disabled
    from tenants.services import tenant_create
    from vdi.models import Image

    tenant = tenant_create(slug="storm", name="Storm Inc")
    spread_tenants = [tenant_create(slug=f"spread-{n}", name=f"Spread {n}")
                      for n in range(SPREAD)]
    with scopes_disabled():
        image = Image.objects.create(name="bench", version=1, base_volume="bench-base.qcow2",
                                     disk_gb=1, default_memory_mb=256)
    hosts = Host.objects.bulk_create(
        Host(name=f"sim-{n:02d}", uri=host_uri(n), virt_type="qemu",
             console_address="127.0.0.1", storage_pool="default-pool", state=HostState.UP,
             cpus=10_000, memory_mb=100_000_000, max_concurrent_boots=4)
        for n in range(HOSTS)
    )
    # One PBKDF2 hash shared by the accounts that log in: hashing each would take minutes
    # and measure nothing; every login still checks it at full cost.
    encoded, unusable = make_password(PASSWORD), make_password(None)
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"token{n:05d}", password=unusable) for n in range(users_count)]
        + [User(username=f"login{n:05d}", password=encoded, email=f"login{n}@example.com")
           for n in range(logins_count)]
        + [User(username=f"profiled{n}", password=unusable) for n in range(PROFILED)],
        batch_size=5000)
    token_users = users[:users_count]
    login_users = users[users_count:users_count + logins_count]
    profiled = users[users_count + logins_count:]
    with scopes_disabled():
        Membership.objects.bulk_create(
            [Membership(tenant=tenant, user=user, role=Role.MEMBER) for user in users]
            + [Membership(tenant=spread_tenants[n % SPREAD], user=user, role=Role.MEMBER)
               for n, user in enumerate(token_users)], batch_size=5000)
    spares = [(tenant, "Office", users_count + PROFILED), (tenant, "Login", logins_count)]
    spares += [(spread_tenant, "Office", len(range(n, users_count, SPREAD)))
               for n, spread_tenant in enumerate(spread_tenants)]
    pools, domains = [], []
    for owner, name, count in spares:
        pools.append(make_pool(owner, image, name, count))
        domains += seed_spares(conn, pools[-1], hosts, count)
    return World(tenant=tenant, pool=pools[0], login_pool=pools[1],
                 spread=list(zip(spread_tenants, pools[2:])), users=token_users,
                 login_users=login_users, profiled=profiled,
                 tokens=issue_tokens(token_users), hosts=hosts, domains=domains)


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


def seed_spares(conn, pool, hosts, count: int) -> list[str]:
    """``count`` running, unassigned desktops: rows, and their domains defined from the
    product's domain XML and started in the test driver."""
    from hypervisors.domain_xml import build_domain_xml
    from hypervisors.networks import tenant_network_ensure
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop
    from vdi.services.executors import _domain_spec

    with scopes_disabled():
        desktops = Desktop.objects.bulk_create(
            (Desktop(tenant=pool.tenant, pool=pool, image=pool.image,
                     name=f"vdi-{uuid.uuid4().hex[:16]}", vcpus=1, memory_mb=256,
                     state="running", host=hosts[n % len(hosts)])
             for n in range(count)), batch_size=5000)
        if desktops:
            # On the tenant's network of each host, as provisioning would put them.
            attachments = {host.pk: tenant_network_ensure(host=host, tenant=pool.tenant)
                           for host in hosts}
            for desktop in desktops:
                xml = build_domain_xml(_domain_spec(desktop, f"/bench/{desktop.name}.qcow2",
                                                    attachments[desktop.host_id]))
                conn.defineXML(xml).create()
    return [desktop.name for desktop in desktops]


def issue_tokens(users) -> dict[str, str]:
    """One knox token per user, made as ``AuthToken.objects.create`` makes it (with the
    ``ApiToken`` row the product keeps beside each), in bulk."""
    from django.utils import timezone
    from knox.models import AuthToken, get_digest_token
    from knox.settings import CONSTANTS, knox_settings

    from tenants.tokens import ApiToken

    now = timezone.now()
    expiry = now + knox_settings.TOKEN_TTL if knox_settings.TOKEN_TTL else None
    tokens, rows = {}, []
    for user in users:
        digest, token = get_digest_token()
        rows.append(AuthToken(digest=digest, token_key=token[:CONSTANTS.TOKEN_KEY_LENGTH],
                              user=user, expiry=expiry))
        tokens[user.username] = token
    rows = AuthToken.objects.bulk_create(rows, batch_size=5000)
    ApiToken.objects.bulk_create((ApiToken(token=row, last_used_at=now) for row in rows),
                                 batch_size=5000)
    return tokens


def forwarded_for(index: int) -> str:
    """Each user from an address of their own, as behind one reverse proxy."""
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


def reset(world: World) -> dict:
    """Every session of the benchmark's pools ended and every desktop a ready spare again,
    with SQL: the next step starts from the same state."""
    from django.db.models import Q
    from django.utils import timezone

    from brokers.models import Session
    from tenants.scoping import scopes_disabled
    from vdi.choices import UNFINISHED_OPERATION_STATES
    from vdi.models import Desktop, Operation

    now = timezone.now()
    with scopes_disabled():
        ended = (Session.objects.filter(pool__in=world.pools).exclude(state="ended")
                 .update(state="ended", end_reason="admin", ended_at=now,
                         state_changed_at=now))
        freed = (Desktop.objects.filter(pool__in=world.pools)
                 .filter(Q(assigned_user__isnull=False) | Q(needs_reset=True))
                 .update(assigned_user=None, needs_reset=False))
        unfinished = Operation.objects.filter(desktop__pool__in=world.pools,
                                              state__in=UNFINISHED_OPERATION_STATES).count()
    return {"sessions_ended": ended, "desktops_freed": freed,
            "unfinished_operations": unfinished}


def handed_out_twice(since) -> int:
    """Desktops that the database shows in sessions of more than one user started since
    ``since`` (one step: within a step, no desktop is freed)."""
    from django.db.models import Count

    from brokers.models import Session
    from tenants.scoping import scopes_disabled

    with scopes_disabled():
        return (Session.objects.filter(created_at__gte=since).exclude(desktop=None)
                .values("desktop").annotate(users=Count("user", distinct=True))
                .filter(users__gt=1).count())


def insert_statement(model, **values: str) -> str:
    """An INSERT of every column of ``model`` for the floor server: ``values`` are SQL
    expressions by attribute name (``%(name)s`` placeholders, filled per request); any other
    column gets the model's default as a literal, or ``now()`` when it is a creation time."""
    from django.db import connection
    from psycopg2.extensions import adapt

    fields = model._meta.concrete_fields
    expressions = []
    for column in fields:
        if column.attname in values:
            expressions.append(values[column.attname])
        elif getattr(column, "auto_now_add", False) or getattr(column, "auto_now", False):
            expressions.append("now()")
        else:
            default = column.get_default() if column.has_default() else None
            value = column.get_db_prep_save(default, connection)
            expressions.append(adapt(value).getquoted().decode())
    return (f"INSERT INTO {model._meta.db_table} ({', '.join(f.column for f in fields)}) "
            f"VALUES ({', '.join(expressions)})")


def floor_statements(world: World) -> dict:
    from knox.settings import CONSTANTS

    from brokers.models import ConnectionTicket, Session

    placeholders = {name: f"%({name})s" for name in (
        "id", "tenant_id", "pool_id", "desktop_id", "user_id", "session_id", "port",
        "issued_by_id", "expires_at")}
    session = insert_statement(
        Session, state="'ready'", ready_at="now()",
        **{k: placeholders[k] for k in ("id", "tenant_id", "pool_id", "desktop_id",
                                        "user_id")})
    ticket = insert_statement(
        ConnectionTicket, kind="'native'", protocol="'spice'", host="'127.0.0.1'",
        **{k: placeholders[k] for k in ("id", "tenant_id", "session_id", "desktop_id",
                                        "port", "issued_by_id", "expires_at")})
    return {"session": session, "ticket": ticket,
            "host_uris": {str(host.pk): host.uri for host in world.hosts},
            "token_key_length": CONSTANTS.TOKEN_KEY_LENGTH,
            "ticket_ttl_s": world.pool.effective_ticket_ttl_s}
