from django.db import models

from core.choices import Tone, TonedChoices, nonmember
from core.statemachine import StateMachine


class SessionState(TonedChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    CONNECTED = "connected", "Connected"
    DISCONNECTED = "disconnected", "Disconnected"
    ENDED = "ended", "Ended"

    TONES = nonmember({"pending": Tone.BUSY, "ready": Tone.GOOD, "connected": Tone.GOOD,
                       "disconnected": Tone.BUSY})


class EndReason(models.TextChoices):
    USER = "user", "Ended by the user"
    IDLE = "idle", "Idle timeout"
    MAX_DURATION = "max_duration", "Maximum duration reached"
    ADMIN = "admin", "Ended by an administrator"
    DESKTOP_LOST = "desktop_lost", "Desktop lost"
    FAILED = "failed", "Desktop could not be prepared"


LIVE_SESSION_STATES = frozenset(
    {SessionState.PENDING, SessionState.READY, SessionState.CONNECTED, SessionState.DISCONNECTED}
)

_S = SessionState
SESSION_MACHINE = StateMachine(
    label="session",
    journal="tenants.usage.usage_record",
    active_states=LIVE_SESSION_STATES - {SessionState.PENDING},
    transitions={
        _S.PENDING: frozenset({_S.READY, _S.ENDED}),
        _S.READY: frozenset({_S.CONNECTED, _S.ENDED}),
        _S.CONNECTED: frozenset({_S.DISCONNECTED, _S.ENDED}),
        _S.DISCONNECTED: frozenset({_S.CONNECTED, _S.ENDED}),
        _S.ENDED: frozenset(),
    },
)


class TicketKind(models.TextChoices):
    NATIVE = "native", "Native client (.vv)"
    BROWSER = "browser", "Browser console"
