"""Reads for the desktop domain. Called inside an active tenant scope."""

from __future__ import annotations

from django.db.models import (Count, Exists, F, Func, IntegerField, OuterRef, Q, QuerySet,
                              Subquery)

from .choices import CHANGING_DESKTOP_STATES, DesktopState, OperationKind, OperationState
from .models import Desktop, Image, Operation, Pool, PoolEntitlement

# The operations that give a pool its desktops: a pool whose last ones all failed is stuck.
BUILDING_OPERATIONS = (OperationKind.PROVISION, OperationKind.RESET)


def _failed_builds_since_last_success():
    """The pool's (``OuterRef("pk")``) provisions and resets that failed after the last one
    that succeeded (all of its failed ones if none ever did)."""
    builds = Operation.objects.filter(kind__in=BUILDING_OPERATIONS).order_by()
    later_success = builds.filter(pool=OuterRef("pool"), state=OperationState.SUCCEEDED,
                                  finished_at__gt=OuterRef("finished_at"))
    return builds.filter(pool=OuterRef("pk"), state=OperationState.FAILED).exclude(
        Exists(later_success))


def pool_visible_to(*, user, is_admin: bool) -> QuerySet[Pool]:
    """Pools the user may see, with their tenant and image and nothing counted: every pool
    for tenant admins, entitled ones that are not being deleted for members. What Connect
    looks its pool up in (one indexed read, where the list's counts would aggregate every
    desktop of the pool)."""
    return _visible(Pool.objects.select_related("tenant", "image"), user, is_admin)


def _visible(pools: QuerySet[Pool], user, is_admin: bool) -> QuerySet[Pool]:
    if is_admin:
        return pools
    listed = PoolEntitlement.objects.filter(pool=OuterRef("pk"), user=user)
    return pools.filter(Q(entitle_all_members=True) | Exists(listed), deleting_since__isnull=True)


def pool_list_for_user(*, user, is_admin: bool) -> QuerySet[Pool]:
    """The pools the user may see (as ``pool_visible_to``), each with its desktop count, how
    many are on its image, and its spares: ``ready_count`` running and ``stopped_count`` stopped desktops nobody holds; and,
    while its provisioning keeps failing, ``provisioning_failures`` (how many failed since
    the last success), ``provisioning_failing_since`` and ``provisioning_last_error``."""
    live = ~Q(desktops__state=DesktopState.DELETING)
    spare = Q(desktops__assigned_user__isnull=True)
    failed = _failed_builds_since_last_success()
    return _visible(Pool.objects.select_related("image"), user, is_admin).annotate(
        desktop_count=Count("desktops", filter=live),
        desktops_on_image_count=Count("desktops", filter=live & Q(desktops__image=F("image"))),
        ready_count=Count("desktops", filter=spare & Q(desktops__state=DesktopState.RUNNING)),
        stopped_count=Count("desktops", filter=spare & Q(desktops__state=DesktopState.STOPPED)),
        changing_count=Count("desktops", filter=Q(desktops__state__in=CHANGING_DESKTOP_STATES)),
        provisioning_failures=Subquery(
            failed.annotate(n=Func(F("pk"), function="COUNT")).values("n"),
            output_field=IntegerField()),
        provisioning_failing_since=Subquery(
            failed.order_by("finished_at").values("finished_at")[:1]),
        provisioning_last_error=Subquery(failed.order_by("-finished_at").values("error")[:1]),
    )


def desktop_list_for_user(*, user, is_admin: bool) -> QuerySet[Desktop]:
    desktops = Desktop.objects.select_related("pool", "host", "assigned_user", "image")
    return desktops if is_admin else desktops.filter(assigned_user=user)


def operation_list_for_user(*, user, is_admin: bool) -> QuerySet[Operation]:
    """Every operation of the tenant for its admins; for members, the ones they asked for
    and the platform's own on the desktops they hold. Not other people's on those desktops:
    a floating desktop's earlier users (and what they did) are none of the next user's
    business."""
    operations = Operation.objects.select_related("desktop", "pool", "actor")
    if is_admin:
        return operations
    return operations.filter(Q(actor=user) | Q(desktop__assigned_user=user, actor__isnull=True))


def operation_list_for_tenant(*, failed_only: bool = False) -> QuerySet[Operation]:
    """The current tenant's operations, newest first; only the failed ones if asked."""
    operations = Operation.objects.select_related("desktop", "pool", "actor").order_by(
        "-created_at")
    return operations.filter(state=OperationState.FAILED) if failed_only else operations


def image_list_available() -> QuerySet[Image]:
    """The tenant's own images and the public ones."""
    return Image.objects.all()
