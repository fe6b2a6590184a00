"""Reads for the desktop domain. Called inside an active tenant scope."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from .models import Desktop, Image, Operation, Pool, PoolEntitlement


def pool_list_for_user(*, user, is_admin: bool) -> QuerySet[Pool]:
    """Pools the user may see: every pool for tenant admins, entitled ones for members."""
    pools = Pool.objects.select_related("image")
    if is_admin:
        return pools
    listed = PoolEntitlement.objects.filter(pool=OuterRef("pk"), user=user)
    return pools.filter(Q(entitle_all_members=True) | Exists(listed))


def desktop_list_for_user(*, user, is_admin: bool) -> QuerySet[Desktop]:
    desktops = Desktop.objects.select_related("pool", "host", "assigned_user", "image")
    return desktops if is_admin else desktops.filter(assigned_user=user)


def operation_list_for_user(*, user, is_admin: bool) -> QuerySet[Operation]:
    operations = Operation.objects.select_related("desktop", "pool", "actor")
    return operations if is_admin else operations.filter(desktop__assigned_user=user)


def image_list_available() -> QuerySet[Image]:
    """The tenant's own images and the public ones."""
    return Image.objects.all()
