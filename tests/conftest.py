"""Shared fixtures: a tenant with every role, a simulated host, an image and pools."""

from __future__ import annotations

import contextlib

import libvirt
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from hypervisors.choices import HostState
from hypervisors.drivers.libvirt_connections import drop_connection
from hypervisors.models import Host
from tenants.choices import Role
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add, tenant_create
from config import celery_app
from vdi.models import Desktop, Image
from vdi.services import pool_create

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def fresh_simulated_hypervisor():
    """libvirt's test driver keeps its domains and volumes while any connection to it is
    open in this process: after each test, remove what tests made (domains, tenant networks,
    disks: its 100 GiB storage pool would otherwise fill up with earlier tests' disks) and
    close the driver's cached connection."""
    yield
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains(0):
            if dom.name() != "test":  # the driver's own domain
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        storage = conn.storagePoolLookupByName("default-pool")
        for volume in storage.listAllVolumes(0):
            volume.delete(0)
        for network in conn.listAllNetworks(0):
            if network.name().startswith("vdi-"):  # tenant networks
                if network.isActive():
                    network.destroy()
                network.undefine()
    finally:
        conn.close()
    drop_connection("test:///default")


@pytest.fixture
def make_user(db):
    def make(username: str, **extra):
        return get_user_model().objects.create_user(username=username, password=PASSWORD,
                                                    email=f"{username}@example.com", **extra)

    return make


@pytest.fixture
def tenant(db):
    return tenant_create(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db):
    return tenant_create(slug="globex", name="Globex")


@pytest.fixture
def users(make_user, tenant, other_tenant):
    """One user per role in ``tenant``, plus an outsider (admin of another tenant) and staff."""
    people = {role: make_user(role) for role in ("owner", "admin", "member")}
    for role, user in people.items():
        membership_add(tenant=tenant, user=user, role=Role(role))
    people["outsider"] = make_user("outsider")
    membership_add(tenant=other_tenant, user=people["outsider"], role=Role.ADMIN)
    people["staff"] = make_user("staff", is_staff=True)
    return people


@pytest.fixture
def host(db):
    return Host.objects.create(
        name="sim-1", uri="test:///default", virt_type="qemu", console_address="127.0.0.1",
        storage_pool="default-pool", state=HostState.UP, cpus=16, memory_mb=65536,
    )


@pytest.fixture
def image(db):
    with scopes_disabled():
        return Image.objects.create(name="debian", version=1, base_volume="debian-v1.qcow2",
                                    disk_gb=1, default_memory_mb=512)


@pytest.fixture
def make_pool(tenant, image, users):
    def make(**fields):
        defaults = {"name": "Office", "image": image, "min_ready": 0, "max_desktops": 5,
                    "memory_mb": 256}
        defaults.update(fields)
        with tenant_scope(tenant):
            return pool_create(tenant=tenant, actor=users["admin"], **defaults)

    return make


@pytest.fixture
def member_desktop(make_pool, host, run_tasks, users):
    """A running desktop of the simulated host, assigned to the member."""
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
        Desktop.objects.filter(pk=desktop.pk).update(assigned_user=users["member"])
    return desktop


@pytest.fixture
def logged_in(client, users):
    """``logged_in(role)``: the test client, logged in to the portal as that role."""

    def login(role):
        client.logout()
        assert client.login(username=users[role].username, password=PASSWORD)
        return client

    return login


@pytest.fixture
def api(users):
    """``api(role)``: an APIClient authenticated with a real API token for that role."""

    def client(role: str | None = None) -> APIClient:
        c = APIClient()
        if role is not None:
            response = c.post("/api/v1/auth/token/",
                              {"username": users[role].username, "password": PASSWORD},
                              format="json")
            assert response.status_code == 200, response.content
            c.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
        return c

    return client


@pytest.fixture
def run_tasks(django_capture_on_commit_callbacks):
    """Inside ``with run_tasks():`` tasks enqueued on commit run at once, in this process."""

    @contextlib.contextmanager
    def block():
        previous = celery_app.conf.task_always_eager
        celery_app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True):
                yield
        finally:
            celery_app.conf.task_always_eager = previous

    return block


@pytest.fixture
def passwords_apply(monkeypatch):
    """The simulated host accepts console passwords, as a real host does (libvirt's test
    driver cannot set them): returns the calls, ``(domain, protocol, disconnect)``."""
    calls = []

    def set_console_password(self, name, protocol, password, valid_until, disconnect=False):
        calls.append((name, protocol, disconnect))

    monkeypatch.setattr("hypervisors.drivers.libvirt_driver.LibvirtDriver.set_console_password",
                        set_console_password)
    return calls
