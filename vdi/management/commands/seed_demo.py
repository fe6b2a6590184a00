"""Seed the demo: tenant acme, staff user admin, member alice, a host, an image, a pool."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from hypervisors.models import Host
from hypervisors.services import host_create
from tenants.choices import Role
from tenants.models import Membership, Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add, tenant_create
from vdi.models import Image, Pool
from vdi.services import pool_create


class Command(BaseCommand):
    help = "Create the demo organisation, users, host, image and pool (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--host-uri", default=os.environ.get("DEMO_HOST_URI", "test:///default"))
        parser.add_argument("--spares", type=int, default=2)

    @transaction.atomic
    def handle(self, *args, host_uri, spares, **options):
        password = os.environ.get("DEMO_PASSWORD", "demo")
        User = get_user_model()
        admin, _ = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True,
                                        "email": "admin@example.com"})
        alice, _ = User.objects.get_or_create(username="alice",
                                              defaults={"email": "alice@example.com"})
        for user in (admin, alice):
            user.set_password(password)
            user.save()

        tenant = Tenant.objects.filter(slug="acme").first() or tenant_create(
            slug="acme", name="Acme Corporation", owner=admin
        )
        with scopes_disabled():
            if not Membership.objects.filter(tenant=tenant, user=alice).exists():
                membership_add(tenant=tenant, user=alice, role=Role.MEMBER)

        if not Host.objects.filter(name="lab-1").exists():
            host_create(name="lab-1", uri=host_uri, virt_type="qemu",
                        console_address="127.0.0.1", storage_pool="default-pool"
                        if host_uri.startswith("test") else "default")
            self.stdout.write(f"host lab-1 ({host_uri}) registered; a worker probes it")

        with scopes_disabled():
            image = Image.objects.filter(tenant=None, name="debian-desktop").first()
            if image is None:
                image = Image.objects.create(
                    name="debian-desktop", version=1, os="Debian 12",
                    base_volume="debian-desktop-v1.qcow2", disk_gb=8,
                    default_vcpus=1, default_memory_mb=1024,
                )
        with tenant_scope(tenant):
            if not Pool.objects.filter(name="Office").exists():
                pool_create(tenant=tenant, actor=admin, name="Office", image=image,
                            description="Everyday office desktops", min_ready=spares,
                            max_desktops=10, vcpus=1, memory_mb=1024)
        self.stdout.write(self.style.SUCCESS(
            f"demo ready: tenant acme; users admin (staff) and alice, password {password!r}"
        ))
