"""Reads for the desktop domain. Called inside an active tenant scope."""

from __future__ import annotations

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet

from .choices import CHANGING_DESKTOP_STATES, DesktopState, OperationState
from .models import Desktop, Image, Operation, Pool, PoolEntitlement


def pool_list_for_user(*, user, is_admin: bool) -> QuerySet[Pool]:
    """Pools the user may see: every pool for tenant admins, entitled ones that are not being
    deleted for members. Each carries its desktop count, how many are on its image, and its
    spares: ``ready_count`` running and ``stopped_count`` stopped desktops nobody holds."""
    live = ~Q(desktops__state=DesktopState.DELETING)
    spare = Q(desktops__assigned_user__isnull=True)
    pools = Pool.objects.select_related("image").annotate(
        desktop_count=Count("desktops", filter=live),
        desktops_on_image_count=Count("desktops", filter=live & Q(desktops__image=F("image"))),
        ready_count=Count("desktops", filter=spare & Q(desktops__state=DesktopState.RUNNING)),
        stopped_count=Count("desktops", filter=spare & Q(desktops__state=DesktopState.STOPPED)),
        changing_count=Count("desktops", filter=Q(desktops__state__in=CHANGING_DESKTOP_STATES)),
    )
    if is_admin:
        return pools
    listed = PoolEntitlement.objects.filter(pool=OuterRef("pk"), user=user)
    return pools.filter(Q(entitle_all_members=True) | Exists(listed), deleting_since__isnull=True)


def desktop_list_for_user(*, user, is_admin: bool) -> QuerySet[Desktop]:
    desktops = Desktop.objects.select_related("pool", "host", "assigned_user", "image")
    return desktops if is_admin else desktops.filter(assigned_user=user)


def operation_list_for_user(*, user, is_admin: bool) -> QuerySet[Operation]:
    operations = Operation.objects.select_related("desktop", "pool", "actor")
    return operations if is_admin else operations.filter(desktop__assigned_user=user)


def operation_list_for_tenant(*, failed_only: bool = False) -> QuerySet[Operation]:
    """The current tenant's operations, newest first; only the failed ones if asked."""
    operations = Operation.objects.select_related("desktop", "pool", "actor").order_by(
        "-created_at")
    return operations.filter(state=OperationState.FAILED) if failed_only else operations


def image_list_available() -> QuerySet[Image]:
    """The tenant's own images and the public ones."""
    return Image.objects.all()
