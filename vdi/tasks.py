from django.conf import settings
from django.db.models import Q

from .choices import OperationState
from .models import Operation, Pool
from tenants.models import Tenant

from .services import (
    WAITING,
    desktops_traffic_filter_apply,
    operation_run,
    operations_reap,
    pool_autoscale,
    pool_autoscale_started,
)
from tenants.taskutils import platform_task


# ignore_result: nobody waits for these results, and with Redis as the result store a send
# that subscribes to its result fails while Redis is away even once the message is queued.
@platform_task("vdi.operation_run", acks_late=True, ignore_result=True)
def operation_run_task(operation_id: str, **_kwargs) -> str:
    # Safe to redeliver: operation_run claims the row and does nothing if it is taken.
    outcome = operation_run(operation_id=operation_id)
    if outcome == OperationState.PENDING:
        attempts = Operation.objects.values_list("attempts", flat=True).get(pk=operation_id)
        operation_run_task.apply_async((operation_id,), countdown=min(2**attempts, 60))
    elif outcome == WAITING:
        # Also woken early when a slot frees up; whichever message comes first claims it.
        operation_run_task.apply_async((operation_id,),
                                       countdown=settings.VDI["BOOT_SLOT_RETRY_S"])
    return outcome


@platform_task("vdi.pool_autoscale", acks_late=True, ignore_result=True)
def pool_autoscale_task(pool_id: str, **_kwargs) -> int:
    pool_autoscale_started(pool_id)
    pool = Pool.objects.select_related("tenant", "image").filter(pk=pool_id).first()
    if pool is None:
        return 0
    return len(pool_autoscale(pool=pool))


@platform_task("vdi.pools_autoscale")
def pools_autoscale_task(**_kwargs) -> None:
    """Beat: every enabled pool is topped up; every pool being deleted takes its next step."""
    pools = Pool.objects.filter(Q(enabled=True) | Q(deleting_since__isnull=False))
    for pool_id in pools.values_list("id", flat=True):
        pool_autoscale_task.delay(str(pool_id))


@platform_task("vdi.operations_reap")
def operations_reap_task(**_kwargs) -> int:
    return operations_reap()


@platform_task("vdi.desktops_traffic_filter_apply", acks_late=True, ignore_result=True)
def desktops_traffic_filter_apply_task(tenant_id: str, **_kwargs) -> int:
    # Safe to redeliver: it sets what the tenant's settings say now.
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    return 0 if tenant is None else desktops_traffic_filter_apply(tenant=tenant)
