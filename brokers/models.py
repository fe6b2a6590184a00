import uuid

from django.conf import settings
from django.db import models

from core.choices import tone_property
from tenants.models import TenantOwnedModel

from .choices import LIVE_SESSION_STATES, EndReason, SessionState, TicketKind


class Session(TenantOwnedModel):
    """A user's use of a desktop from a pool, from Connect to logoff."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A pool is deleted only after its sessions ended and its desktops are gone; its session
    # history goes with it.
    pool = models.ForeignKey("vdi.Pool", on_delete=models.CASCADE, related_name="sessions")
    desktop = models.ForeignKey(
        "vdi.Desktop", on_delete=models.SET_NULL, null=True, blank=True, related_name="sessions"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="vdi_sessions"
    )
    state = models.CharField(
        max_length=16, choices=SessionState.choices, default=SessionState.PENDING
    )
    state_tone = tone_property("state", SessionState)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True, default="")
    operation = models.ForeignKey(
        "vdi.Operation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="What the session waits for while pending.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    client_address = models.CharField(
        max_length=64, blank=True, default="", help_text="Where the console client connected from."
    )
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "user", "state"])]
        constraints = [
            # The holder rule's foundation (brokers/holding.py): one live session a desktop.
            models.UniqueConstraint(
                fields=["tenant", "desktop"],
                condition=models.Q(state__in=sorted(LIVE_SESSION_STATES)),
                name="session_one_live_per_desktop",
            ),
        ]

    def __str__(self) -> str:
        return f"session {self.id} ({self.state})"


class ConnectionTicket(TenantOwnedModel):
    """One console password handed to a user: it is set on the live domain, never stored.

    ``token_hash`` is the SHA-256 of the browser-console proxy token (single use).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="tickets")
    desktop = models.ForeignKey(
        "vdi.Desktop", on_delete=models.SET_NULL, null=True, related_name="tickets"
    )
    kind = models.CharField(max_length=16, choices=TicketKind.choices, default=TicketKind.NATIVE)
    protocol = models.CharField(max_length=8)
    host = models.CharField(max_length=255)
    port = models.IntegerField(null=True, blank=True)
    tls_port = models.IntegerField(null=True, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    password_applied = models.BooleanField(
        default=False,
        help_text="False when the host's driver cannot set console passwords (simulated host).",
    )
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"ticket {self.id}"
