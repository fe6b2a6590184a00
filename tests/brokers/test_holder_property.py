"""The holder rule as a stateful property: users and an admin do random things, and after
every step the invariants hold.

Everything goes through the real services (connect, tickets, browser tokens, takeover, end,
power operations, logoff policies, host down and up, pool disable, member removal,
suspension), with the operations they enqueue run by the real task code on libvirt's test
driver. Each example gets an organisation, people and pools of its own.

The invariants, checked from the database after every step:
- a desktop has at most one live session, and a desktop with a live session is assigned:
  to that session's user on a floating pool, to its owner on a dedicated one (whose live
  session is the owner's or, during a takeover, an admin's);
- every ticket and every browser-console hand-out went to the desktop's holder, while the
  organisation was active, the pool enabled and the user allowed in it;
- nobody keeps a live session once their access ended (member removed, pool disabled,
  organisation suspended);
- a floating desktop never reaches a different user without a reset to its image in
  between (a takeover is the one sanctioned exception: the admin watches the user's desktop);
- the quotas count exactly what there is, and no quota is exceeded.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import libvirt
import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from brokers.choices import LIVE_SESSION_STATES, TicketKind
from brokers.models import ConnectionTicket, Session
from brokers.services import (
    console_token_consume,
    session_connect,
    session_end,
    session_takeover,
    ticket_issue,
)
from hypervisors.choices import HostState
from hypervisors.drivers import TransientDriverError
from hypervisors.drivers.libvirt_driver import LibvirtDriver
from hypervisors.models import Host
from hypervisors.services import host_check
from tenants.choices import Role, TenantStatus
from tenants.models import AuditEvent, Membership
from tenants.scoping import scopes_disabled
from tenants.selectors import quota_usage
from tenants.members import membership_remove
from tenants.services import membership_add, tenant_create, tenant_set_status
from vdi.choices import DesktopState, OnLogoff, OperationKind, OperationState, PoolKind
from core.errors import ServiceError
from vdi.models import Desktop, Operation, Pool
from vdi.services import desktop_power, pool_autoscale, pool_create, pool_update

MEMBERS = 3
POWER_KINDS = [OperationKind.START, OperationKind.SHUTDOWN, OperationKind.POWEROFF,
               OperationKind.REBOOT, OperationKind.RESET]
_examples = itertools.count()


@contextmanager
def hosts_down(uris: set[str]):
    """The simulated host stops answering its health checks while its URI is in ``uris``."""
    real = LibvirtDriver.host_info

    def host_info(self):
        if self.uri in uris:
            raise TransientDriverError("the host does not answer")
        return real(self)

    LibvirtDriver.host_info = host_info
    try:
        yield
    finally:
        LibvirtDriver.host_info = real


def wipe_simulated_hypervisor() -> None:
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains(0):
            if dom.name() != "test":
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for volume in conn.storagePoolLookupByName("default-pool").listAllVolumes(0):
            volume.delete(0)
    finally:
        conn.close()


@pytest.mark.postgresql
def test_the_holder_rule_holds_whatever_users_and_admins_do(db, run_tasks, image, monkeypatch):
    down: set[str] = set()
    monkeypatch.setitem(django_settings.VDI, "HOST_DOWN_AFTER_FAILURES", 1)
    monkeypatch.setitem(django_settings.VDI, "TICKET_WAIT_S", 5)

    class Holders(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            n = next(_examples)
            User = get_user_model()
            self.tenant = tenant_create(slug=f"prop-{n}", name=f"Prop {n}", max_sessions=3,
                                        max_desktops=5, max_vcpus=None, max_memory_mb=None)
            self.admin = User.objects.create_user(f"p{n}-admin")
            membership_add(tenant=self.tenant, user=self.admin, role=Role.ADMIN)
            self.members = []
            for i in range(MEMBERS):
                user = User.objects.create_user(f"p{n}-user{i}")
                membership_add(tenant=self.tenant, user=user, role=Role.MEMBER)
                self.members.append(user)
            self.host = Host.objects.create(
                name=f"prop-{n}", uri="test:///default", virt_type="qemu",
                console_address="127.0.0.1", storage_pool="default-pool",
                state=HostState.UP, cpus=64, memory_mb=262144)
            self.pools: list[Pool] = []
            self.tokens: list[str] = []

        @initialize(policy=st.sampled_from(OnLogoff.values), size=st.integers(1, 2),
                    spares=st.integers(0, 1))
        def pools_made(self, policy, size, spares):
            # Small floating pools, so that desktops pass from user to user often.
            with self.tasks():
                self.pools = [
                    pool_create(tenant=self.tenant, actor=self.admin, name="Floating",
                                image=image, kind=PoolKind.FLOATING, min_ready=spares,
                                max_desktops=size, memory_mb=256, on_logoff=policy),
                    pool_create(tenant=self.tenant, actor=self.admin, name="Dedicated",
                                image=image, kind=PoolKind.DEDICATED, min_ready=1,
                                max_desktops=3, memory_mb=256),
                ]

        def teardown(self):
            # Retire this example's host, and give the simulated hypervisor's disk space back.
            Host.objects.filter(pk=self.host.pk).update(enabled=False,
                                                        state=HostState.MAINTENANCE)
            down.discard(self.host.uri)
            wipe_simulated_hypervisor()

        @contextmanager
        def tasks(self):
            with scopes_disabled(), run_tasks():
                yield

        # --- helpers ------------------------------------------------------------------
        @property
        def people(self):
            return [*self.members, self.admin]

        def pool(self, index) -> Pool:
            with scopes_disabled():
                return Pool.objects.get(pk=self.pools[index].pk)

        def pick(self, items, index):
            return items[index % len(items)] if items else None

        def sessions(self):
            with scopes_disabled():
                return list(Session.objects.filter(tenant=self.tenant)
                            .select_related("desktop", "pool", "user").order_by("created_at",
                                                                                  "id"))

        def desktops(self):
            with scopes_disabled():
                return list(Desktop.objects.filter(tenant=self.tenant)
                            .select_related("pool", "tenant").order_by("created_at", "id"))

        def attempt(self, action):
            """Run a service call; refusals (4xx) are part of the game and change nothing."""
            try:
                with self.tasks():
                    return action()
            except ServiceError:
                return None

        def assert_holder_got(self, session: Session, user, what: str) -> None:
            """``what`` was handed to ``user`` for ``session``: they must hold its desktop."""
            with scopes_disabled():
                session = Session.objects.select_related("desktop", "pool", "tenant").get(
                    pk=session.pk)
                live = list(Session.objects.filter(desktop=session.desktop_id,
                                                   state__in=LIVE_SESSION_STATES))
                allowed = user.is_staff or Membership.objects.filter(
                    tenant=session.tenant, user=user).exists()
            assert session.user_id == user.pk, f"{what} for someone else's session"
            assert session.state in LIVE_SESSION_STATES, f"{what} for an ended session"
            assert live == [session], f"{what} for a desktop held by another session"
            assert session.tenant.status == TenantStatus.ACTIVE, f"{what} while suspended"
            assert session.pool.enabled, f"{what} in a disabled pool"
            assert allowed, f"{what} for someone no longer a member"

        # --- what people do -------------------------------------------------------------
        @rule(who=st.integers(0, MEMBERS), pool=st.integers(0, 1))
        def connect(self, who, pool):
            user, pool = self.pick(self.people, who), self.pool(pool)
            result = self.attempt(lambda: session_connect(user=user, pool=pool))
            if result is not None and result.ticket is not None:
                self.assert_holder_got(result.session, user, "a Connect ticket")

        @rule(who=st.integers(0, MEMBERS), which=st.integers(0, 50), browser=st.booleans())
        def ticket(self, who, which, browser):
            user, session = self.pick(self.people, who), self.pick(self.sessions(), which)
            if session is None:
                return
            kind = TicketKind.BROWSER if browser else TicketKind.NATIVE
            issued = self.attempt(lambda: ticket_issue(session=session, user=user, kind=kind))
            if issued is not None:
                self.assert_holder_got(session, user, "a ticket")
                if issued.token:
                    self.tokens.append(issued.token)

        @rule(which=st.integers(0, 50))
        def open_browser_console(self, which):
            token = self.pick(self.tokens, which)
            if token is None:
                return
            with scopes_disabled():
                target = console_token_consume(token=token)
                if target is not None:
                    session = Session.objects.get(pk=target.session_id)
                    self.assert_holder_got(session, session.user, "a browser console")

        @rule(which=st.integers(0, 50))
        def takeover(self, which):
            desktop = self.pick(self.desktops(), which)
            if desktop is not None:
                result = self.attempt(lambda: session_takeover(desktop=desktop,
                                                               actor=self.admin))
                if result is not None and result.ticket is not None:
                    self.assert_holder_got(result.session, self.admin, "a takeover ticket")

        @rule(which=st.integers(0, 50), by_admin=st.booleans())
        def end(self, which, by_admin):
            live = [s for s in self.sessions() if s.state in LIVE_SESSION_STATES]
            session = self.pick(live, which)
            if session is not None:
                actor = self.admin if by_admin else session.user
                self.attempt(lambda: session_end(session=session, actor=actor))

        @rule(who=st.integers(0, MEMBERS), which=st.integers(0, 50),
              kind=st.sampled_from(POWER_KINDS))
        def power(self, who, which, kind):
            user, desktop = self.pick(self.people, who), self.pick(self.desktops(), which)
            if desktop is not None:
                self.attempt(lambda: desktop_power(desktop=desktop, kind=kind, actor=user))

        @rule(policy=st.sampled_from(OnLogoff.values))
        def logoff_policy(self, policy):
            self.attempt(lambda: pool_update(pool=self.pool(0), actor=self.admin,
                                             on_logoff=policy))

        @rule(pool=st.integers(0, 1), enabled=st.booleans())
        def pool_enabled(self, pool, enabled):
            self.attempt(lambda: pool_update(pool=self.pool(pool), actor=self.admin,
                                             enabled=enabled))

        @rule(pool=st.integers(0, 1))
        def autoscale(self, pool):
            pool = self.pool(pool)
            self.attempt(lambda: pool_autoscale(pool=pool))

        @rule(who=st.integers(0, MEMBERS - 1))
        def member_removed_and_back(self, who):
            user = self.members[who]
            with scopes_disabled():
                membership = Membership.objects.get(tenant=self.tenant, user=user)
            self.attempt(lambda: membership_remove(membership=membership, actor=self.admin))
            with scopes_disabled():
                assert not Session.objects.filter(tenant=self.tenant, user=user,
                                                  state__in=LIVE_SESSION_STATES).exists()
            membership_add(tenant=self.tenant, user=user, role=Role.MEMBER)

        @rule()
        def suspended_and_resumed(self):
            self.attempt(lambda: tenant_set_status(tenant=self.tenant,
                                                   status=TenantStatus.SUSPENDED,
                                                   actor=self.admin))
            with scopes_disabled():
                assert not Session.objects.filter(tenant=self.tenant,
                                                  state__in=LIVE_SESSION_STATES).exists()
            for index in range(len(self.pools)):
                pool = self.pool(index)
                result = self.attempt(lambda: session_connect(user=self.members[0], pool=pool))
                assert result is None, "a Connect while suspended"
            self.attempt(lambda: tenant_set_status(tenant=self.tenant,
                                                   status=TenantStatus.ACTIVE,
                                                   actor=self.admin))

        @rule()
        def host_down_and_up(self):
            down.add(self.host.uri)
            with hosts_down(down):
                self.attempt(lambda: host_check(host=Host.objects.get(pk=self.host.pk)))
                with scopes_disabled():
                    assert not Session.objects.filter(
                        tenant=self.tenant, state__in=LIVE_SESSION_STATES,
                        desktop__host=self.host).exclude(desktop__state__in=(
                            DesktopState.PENDING, DesktopState.PROVISIONING)).exists()
            down.discard(self.host.uri)
            self.attempt(lambda: host_check(host=Host.objects.get(pk=self.host.pk)))

        # --- what must hold after every step --------------------------------------------
        @invariant()
        def one_holder_per_desktop(self):
            with scopes_disabled():
                live = list(Session.objects.filter(tenant=self.tenant,
                                                   state__in=LIVE_SESSION_STATES)
                            .select_related("desktop__pool"))
                admins = set(Membership.objects.filter(
                    tenant=self.tenant, role__in=(Role.ADMIN, Role.OWNER))
                    .values_list("user_id", flat=True))
            per_desktop = {}
            for session in live:
                assert session.desktop_id not in per_desktop, "two live sessions, one desktop"
                per_desktop[session.desktop_id] = session
                desktop = session.desktop
                assert desktop.assigned_user_id is not None, "a live session, nobody assigned"
                if desktop.pool.kind == PoolKind.FLOATING:
                    assert desktop.assigned_user_id == session.user_id
                else:
                    assert session.user_id in (desktop.assigned_user_id, *admins)

        @invariant()
        def floating_desktops_are_reset_between_users(self):
            with scopes_disabled():
                takeovers = {event.details.get("session") for event in AuditEvent.objects.filter(
                    tenant=self.tenant, action="desktop.takeover")}
                for desktop in Desktop.objects.filter(tenant=self.tenant,
                                                      pool__kind=PoolKind.FLOATING):
                    uses = [("use", s.ready_at, s.user_id, str(s.id) in takeovers)
                            for s in Session.objects.filter(desktop=desktop,
                                                            ready_at__isnull=False)]
                    resets = [("reset", op.started_at, None, False)
                              for op in Operation.objects.filter(
                                  desktop=desktop, kind=OperationKind.RESET,
                                  state=OperationState.SUCCEEDED)]
                    last_user = None
                    for kind, _at, user, takeover in sorted(uses + resets,
                                                             key=lambda e: e[1]):
                        if kind == "reset":
                            last_user = None
                        elif not takeover:
                            assert last_user in (None, user), (
                                f"desktop {desktop.name} reached another user unreset")
                            last_user = user

        @invariant()
        def quotas_are_exact_and_kept(self):
            with scopes_disabled():
                live = Session.objects.filter(tenant=self.tenant,
                                              state__in=LIVE_SESSION_STATES).count()
                desktops = Desktop.objects.filter(tenant=self.tenant).exclude(
                    state=DesktopState.DELETING).count()
            used = {row["quota"]: row["used"] for row in quota_usage(tenant=self.tenant)}
            assert (used["max_sessions"], used["max_desktops"]) == (live, desktops)
            assert live <= 3 and desktops <= 5

        @invariant()
        def tickets_belong_to_their_sessions_desktop(self):
            with scopes_disabled():
                for ticket in ConnectionTicket.objects.filter(tenant=self.tenant).select_related(
                        "session"):
                    assert ticket.desktop_id == ticket.session.desktop_id
                    assert ticket.created_at >= ticket.session.ready_at

    Holders.TestCase.settings = settings(
        max_examples=50, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    run_state_machine_as_test(Holders, settings=Holders.TestCase.settings)
