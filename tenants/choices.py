from django.db import models

from core.choices import Tone, TonedChoices, nonmember


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


ADMIN_ROLES = frozenset({Role.OWNER, Role.ADMIN})


class AuditResult(TonedChoices):
    """How an audited mutation ended."""

    OK = "ok", "OK"  # done (or accepted: the work it started is recorded when it finishes)
    DENIED = "denied", "Denied"  # the actor may not do this (403)
    REJECTED = "rejected", "Rejected"  # refused as asked: bad input, state, quota (400, 409)
    FAILED = "failed", "Failed"  # allowed and attempted, but it broke

    TONES = nonmember({"ok": Tone.GOOD, "denied": Tone.BAD, "rejected": Tone.BAD,
                       "failed": Tone.BAD})


class AuditSource(models.TextChoices):
    """Through what the mutation came (``core.context.Source``)."""

    API = "api", "REST API"
    PORTAL = "portal", "Portal"
    ADMIN = "admin", "Django admin"
    TASK = "task", "Background task"
    SYSTEM = "system", "System"
