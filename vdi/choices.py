from django.db import models

from core.choices import Tone, TonedChoices, nonmember
from core.statemachine import StateMachine


class PoolKind(models.TextChoices):
    FLOATING = "floating", "Floating (non-persistent)"
    DEDICATED = "dedicated", "Dedicated (persistent)"


class Protocol(models.TextChoices):
    SPICE = "spice", "SPICE"
    VNC = "vnc", "VNC"


class OnLogoff(models.TextChoices):
    RECYCLE = "recycle", "Reset to the image and return to the pool"
    SHUTDOWN = "shutdown", "Shut down"
    KEEP = "keep", "Keep running"


class ImageBoot(models.TextChoices):
    DISK = "disk", "Boot from disk"
    KERNEL = "kernel", "Direct kernel boot (lab)"


class DesktopState(TonedChoices):
    PENDING = "pending", "Pending"
    PROVISIONING = "provisioning", "Provisioning"
    STOPPED = "stopped", "Stopped"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    RECYCLING = "recycling", "Recycling"
    DELETING = "deleting", "Deleting"
    ERROR = "error", "Error"
    UNKNOWN = "unknown", "Unknown"

    TONES = nonmember({
        "running": Tone.GOOD,
        "pending": Tone.BUSY, "provisioning": Tone.BUSY, "starting": Tone.BUSY,
        "stopping": Tone.BUSY, "recycling": Tone.BUSY,
        "deleting": Tone.BAD, "error": Tone.BAD, "unknown": Tone.BAD,
    })


_D = DesktopState
DESKTOP_MACHINE = StateMachine(
    label="desktop",
    journal="tenants.usage.usage_record",
    active_states=frozenset({DesktopState.RUNNING}),
    transitions={
        _D.PENDING: frozenset({_D.PROVISIONING, _D.DELETING, _D.ERROR}),
        _D.PROVISIONING: frozenset({_D.STOPPED, _D.ERROR, _D.UNKNOWN}),
        # stopped -> running: started outside the portal (seen by reconciliation or events).
        _D.STOPPED: frozenset({_D.STARTING, _D.RUNNING, _D.RECYCLING, _D.DELETING, _D.ERROR,
                               _D.UNKNOWN}),
        _D.STARTING: frozenset({_D.RUNNING, _D.STOPPED, _D.ERROR, _D.UNKNOWN}),
        _D.RUNNING: frozenset({_D.STOPPING, _D.STOPPED, _D.RECYCLING, _D.DELETING, _D.ERROR,
                               _D.UNKNOWN}),
        _D.STOPPING: frozenset({_D.STOPPED, _D.RUNNING, _D.ERROR, _D.UNKNOWN}),
        _D.RECYCLING: frozenset({_D.STOPPED, _D.ERROR, _D.UNKNOWN}),
        _D.DELETING: frozenset({_D.ERROR}),
        _D.ERROR: frozenset({_D.STARTING, _D.STOPPED, _D.RECYCLING, _D.DELETING}),
        # unknown -> recycling: a floating desktop nobody holds is reset when its host
        # answers again.
        _D.UNKNOWN: frozenset({_D.RUNNING, _D.STOPPED, _D.RECYCLING, _D.ERROR, _D.DELETING}),
    },
)

# States a desktop passes through on its way somewhere: the portal watches them closely.
CHANGING_DESKTOP_STATES = (_D.PENDING, _D.PROVISIONING, _D.STARTING, _D.STOPPING,
                           _D.RECYCLING, _D.DELETING)


class OperationKind(models.TextChoices):
    PROVISION = "provision", "Provision"
    START = "start", "Start"
    SHUTDOWN = "shutdown", "Shut down"
    POWEROFF = "poweroff", "Power off"
    REBOOT = "reboot", "Reboot"
    RESET = "reset", "Reset to image"
    DELETE = "delete", "Delete"


# Which desktop states each operation users may ask for can start from. A desktop in error
# starts again only through a reset: whatever broke it (and whoever used it) stays behind.
POWER_OPERATIONS_FROM = {
    OperationKind.START: (_D.STOPPED,),
    OperationKind.SHUTDOWN: (_D.RUNNING,),
    OperationKind.POWEROFF: (_D.RUNNING, _D.STOPPING, _D.UNKNOWN),
    OperationKind.REBOOT: (_D.RUNNING,),
    OperationKind.RESET: (_D.RUNNING, _D.STOPPED, _D.ERROR),
    OperationKind.DELETE: (_D.STOPPED, _D.RUNNING, _D.ERROR, _D.UNKNOWN),
}


class OperationState(TonedChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"

    TONES = nonmember({"pending": Tone.BUSY, "running": Tone.BUSY, "succeeded": Tone.GOOD,
                       "failed": Tone.BAD})


UNFINISHED_OPERATION_STATES = (OperationState.PENDING, OperationState.RUNNING)

_O = OperationState
OPERATION_MACHINE = StateMachine(
    label="operation",
    transitions={
        _O.PENDING: frozenset({_O.RUNNING, _O.FAILED}),
        # running -> pending: a reaped or transiently failed operation is queued again.
        _O.RUNNING: frozenset({_O.SUCCEEDED, _O.FAILED, _O.PENDING}),
        _O.SUCCEEDED: frozenset(),
        _O.FAILED: frozenset(),
    },
)


# Desktops in these states hold their host's resources (boots in flight included).
RESERVING_STATES = (
    DesktopState.PROVISIONING, DesktopState.STARTING, DesktopState.RUNNING,
    DesktopState.STOPPING, DesktopState.RECYCLING, DesktopState.UNKNOWN,
)
# Desktops whose state says what their domain should be doing. Others are in the middle of
# an operation, which owns their state until it finishes.
SETTLED_STATES = (DesktopState.RUNNING, DesktopState.STOPPED)
# Desktops still to be given a host.
UNPLACED_STATES = (DesktopState.PENDING, DesktopState.PROVISIONING)
