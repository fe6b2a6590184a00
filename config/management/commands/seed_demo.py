"""Seed the demo: tenant acme, staff user admin, member alice, a host, an image, a pool.

With ``--kernel`` the image is the lab's tiny guest (direct kernel boot) and the host a real
libvirtd, whose domains outlive the demo's processes. The database is kept between runs on
such a host, so the seed also settles the two before any worker starts; see ``_settle``.
"""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from brokers.choices import LIVE_SESSION_STATES, EndReason
from brokers.models import Session
from brokers.services import session_end
from hypervisors.drivers import DriverError, driver_for
from hypervisors.models import Host
from hypervisors.services import host_check, host_create
from tenants.choices import Role
from tenants.models import Membership, Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import membership_add, tenant_create
from core.modelutils import model_update
from vdi.choices import ImageBoot
from vdi.models import Image, Pool
from vdi.services import image_save, pool_autoscale_enqueue, pool_create

HOST_NAME = "lab-1"


class Command(BaseCommand):
    help = "Create the demo organisation, users, host, image and pool (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--host-uri", default=os.environ.get("DEMO_HOST_URI", "test:///default"))
        parser.add_argument("--storage-pool", default="",
                            help="the host's storage pool (default: the driver's usual one)")
        parser.add_argument("--console-address", default="127.0.0.1")
        parser.add_argument("--spares", type=int, default=2)
        lab = parser.add_argument_group("the lab's tiny guest as the demo image (scripts/lab)")
        lab.add_argument("--kernel", default="", help="kernel for direct boot")
        lab.add_argument("--initrd", default="")
        lab.add_argument("--cmdline", default="")
        lab.add_argument("--base-volume", default="lab-guest-base.qcow2",
                         help="the image's qcow2 base volume in the storage pool")
        lab.add_argument("--own-storage-pool", action="store_true",
                         help="the storage pool is the demo's alone: guests whose disks are "
                              "there but which the database does not know are removed")

    @transaction.atomic
    def handle(self, *args, host_uri, storage_pool, console_address, spares, kernel, initrd,
               cmdline, base_volume, own_storage_pool, **options):
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

        host = Host.objects.filter(name=HOST_NAME).first()
        if host is None:
            simulated = host_uri.startswith("test")
            host = host_create(
                name=HOST_NAME, uri=host_uri, virt_type="qemu", console_address=console_address,
                storage_pool=storage_pool or ("default-pool" if simulated else "default"),
                # TCG guests boot slowly on a small machine: two at a time.
                max_concurrent_boots=4 if simulated else 2,
            )
            self.stdout.write(f"host {HOST_NAME} ({host_uri}) registered")

        image = self._image(kernel=kernel, initrd=initrd, cmdline=cmdline,
                            base_volume=base_volume)
        if not host.is_simulated:
            self._settle(host, image, own_storage_pool=own_storage_pool)
        # Checked now rather than by the worker, so the pool's first top-up finds it up.
        host = host_check(host=host)
        self.stdout.write(f"host {HOST_NAME}: {host.state}"
                          + (f" ({host.last_error})" if host.last_error else ""))
        with tenant_scope(tenant):
            pool = Pool.objects.filter(name="Office").first()
            if pool is None:
                pool_create(tenant=tenant, actor=admin, name="Office", image=image,
                            description="Everyday office desktops", min_ready=spares,
                            max_desktops=4 if kernel else 10, vcpus=1,
                            memory_mb=image.default_memory_mb)
            else:
                pool_autoscale_enqueue(pool)  # replaces desktops the host lost meanwhile
        self.stdout.write(self.style.SUCCESS(
            f"demo ready: tenant acme; users admin (staff) and alice, password {password!r}"
        ))

    def _image(self, *, kernel, initrd, cmdline, base_volume) -> Image:
        with scopes_disabled():
            if not kernel:
                image = Image.objects.filter(tenant=None, name="debian-desktop").first()
                return image or Image.objects.create(
                    name="debian-desktop", version=1, os="Debian 12",
                    base_volume="debian-desktop-v1.qcow2", disk_gb=8,
                    default_vcpus=1, default_memory_mb=1024,
                )
            wanted = {"kernel": kernel, "initrd": initrd, "cmdline": cmdline,
                      "base_volume": base_volume}
            image = Image.objects.filter(tenant=None, name="lab-guest").first()
            if image is None:
                image = Image(name="lab-guest", version=1, os="Linux + busybox (lab guest)",
                              disk_gb=1, default_vcpus=1, default_memory_mb=160,
                              boot=ImageBoot.KERNEL)
            if not model_update(image, wanted) and not image._state.adding:
                return image
            return image_save(image=image)  # new, or the lab was rebuilt elsewhere

    def _settle(self, host: Host, image: Image, *, own_storage_pool: bool) -> None:
        """Make the database and the host's domains agree before any worker runs.

        Desktops whose domains are still there are kept: the worker's first check of the
        host adopts them as they are. Desktops whose domains are gone (the lab was stopped
        in between) are forgotten, and the autoscaler makes new spares. In a storage pool
        that is the demo's alone, guests and disks the database does not know were made by
        an earlier demo database (``make clean``): they are removed. Other domains belong to
        someone else and are left alone.
        """
        driver = driver_for(host)
        try:
            domains = driver.list_domains()
            volumes = set(driver.storage_info(host.storage_pool).volumes)
        except DriverError as error:
            self.stderr.write(f"host {host.name}: not reconciled now ({error}); "
                              "the worker's checks will")
            return
        kept, lost = [], []
        with scopes_disabled():
            for desktop in host.desktops.all():
                if desktop.name in domains:
                    kept.append(desktop)
                    continue
                # Deleted first, so ending its sessions does not recycle it.
                sessions = list(Session.objects.filter(desktop=desktop,
                                                       state__in=LIVE_SESSION_STATES))
                desktop.delete()
                for session in sessions:
                    session_end(session=session, actor=None, reason=EndReason.DESKTOP_LOST)
                lost.append(desktop.name)
        removed = []
        if own_storage_pool:
            known = {desktop.name for desktop in kept}
            for name in sorted(set(domains) - known):
                if f"{name}.qcow2" in volumes:  # a desktop's disk is named after its domain
                    driver.destroy(name)
                    driver.undefine(name)
                    removed.append(name)
            keep_volumes = {image.base_volume} | {desktop.volume_name for desktop in kept}
            for volume in sorted(volumes - keep_volumes):
                driver.delete_volume(host.storage_pool, volume)
        if kept:
            self.stdout.write(f"host {host.name}: {len(kept)} desktop(s) still defined there "
                              "from the last run, kept")
        if lost:
            self.stdout.write(f"host {host.name}: {len(lost)} desktop(s) whose domains are "
                              f"gone forgotten ({', '.join(lost)})")
        if removed:
            self.stdout.write(f"host {host.name}: {len(removed)} guest(s) of an earlier demo "
                              f"database removed ({', '.join(removed)})")
