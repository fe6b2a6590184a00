"""Images, pools, desktops and the operations that change them, one module per concern:

- ``images``: golden images saved, deleted and published;
- ``pools``: pools and their autoscaler (spares, roll-outs, deletion);
- ``desktops``: desktops created, claimed, powered, and kept in step with their host;
- ``operations``: the operation rows, claimed once, failed, reaped; the hosts' boot slots;
- ``executors``: what each operation kind does on the host (workers only);
- ``runner``: a worker runs one operation.

Web requests call the ``pool_*`` / ``desktop_*`` functions: they record intent (rows) and
enqueue work after commit. Workers call ``operation_run``, the only path to the hypervisor.
"""

from .images import (
    image_delete,
    image_publish,
    image_save,
)
from .pools import (
    pool_autoscale,
    pool_create,
    pool_delete,
    pool_entitlements_changed,
    pool_save,
    pool_update,
)
from .desktops import (
    POWER_ON_OPERATIONS,
    desktop_claim_spare,
    desktop_create,
    desktop_mark_unknown,
    desktop_mark_used,
    desktop_observe,
    desktop_power,
)
from .operations import (
    BOOT_SLOT,
    WAITING,
    operation_claim,
    operation_create,
    operation_fail,
    operations_reap,
    pool_autoscale_enqueue,
    pool_autoscale_started,
)
from .executors import (
    desktops_traffic_filter_apply,
)
from .runner import (
    operation_run,
)
