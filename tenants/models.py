import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from .choices import ADMIN_ROLES, AuditResult, AuditSource, Role, TenantStatus
from .scoping import TenantScopedManager, TenantScopedQuerySet

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and inner hyphens.",
)


class Tenant(models.Model):
    """A customer organisation. Platform-owned: only staff create and suspend tenants."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE
    )
    # Quotas: null means unlimited.
    max_desktops = models.PositiveIntegerField(null=True, blank=True)
    max_vcpus = models.PositiveIntegerField(null=True, blank=True)
    max_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    max_sessions = models.PositiveIntegerField(
        null=True, blank=True, help_text="Concurrent sessions."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


class TenantOwnedModel(models.Model):
    """Base of every tenant-owned table: a tenant FK and the fail-closed manager."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")

    objects = TenantScopedManager()

    class Meta:
        abstract = True


class Membership(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_tenant_user_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


class AppendOnlyError(RuntimeError):
    """An audit entry was about to be changed or deleted: the trail is append-only."""


class AuditEventQuerySet(TenantScopedQuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit entries are never changed.")

    def delete(self):
        raise AppendOnlyError("Audit entries are never deleted.")


class AuditEvent(TenantOwnedModel):
    """Who did what to which object, when, through what, from where, and how it ended.

    Append-only: the model, its queryset and, on PostgreSQL, a trigger refuse updates and
    deletes (migration 0003). A tenant's entries are its own audit trail; platform actions
    on objects no tenant owns (hosts, public images) have no tenant and only staff see them,
    in Django admin. A tenant with entries can't be deleted (``PROTECT``; suspend it
    instead), so its trail is never lost with it. Deleting a user empties ``actor`` (the one
    change allowed) and their entries keep ``actor_name``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, null=True, blank=True,
                               related_name="+", help_text="Empty for platform actions.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", help_text="Empty when the platform acted on its own.",
    )
    actor_name = models.CharField(max_length=150, blank=True,
                                  help_text="The actor's username at the time.")
    action = models.CharField(max_length=64, help_text="e.g. session.takeover")
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    result = models.CharField(max_length=8, choices=AuditResult.choices,
                              default=AuditResult.OK)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    source = models.CharField(max_length=8, choices=AuditSource.choices,
                              default=AuditSource.SYSTEM)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True,
                                  help_text="The request's X-Request-ID, or the task's id.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = TenantScopedManager.from_queryset(AuditEventQuerySet)()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id} ({self.result})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit entries are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit entries are never deleted.")


class UsageSubject(models.TextChoices):
    DESKTOP = "desktop", "Desktop"
    SESSION = "session", "Session"


class UsageEvent(TenantOwnedModel):
    """The usage journal: a desktop or session entered a state, and whether it now counts
    (a running desktop, a live session). Kept after the desktop or session is gone, so a
    month's figures never change when pools are deleted."""

    id = models.BigAutoField(primary_key=True)
    subject = models.CharField(max_length=8, choices=UsageSubject.choices)
    subject_id = models.UUIDField()
    pool_id = models.UUIDField(null=True, blank=True)
    state = models.CharField(max_length=16)
    active = models.BooleanField(help_text="Counts from now on: running, or a live session.")
    vcpus = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveIntegerField(default=0)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["tenant", "at"])]


class MonthlyUsage(TenantOwnedModel):
    """A tenant's usage in one calendar month (UTC), as the beat last computed it."""

    id = models.BigAutoField(primary_key=True)
    month = models.DateField(help_text="The first day of the month.")
    desktop_hours = models.FloatField(default=0)
    session_hours = models.FloatField(default=0)
    vcpu_hours = models.FloatField(default=0)
    memory_gb_hours = models.FloatField(default=0)
    peak_sessions = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-month"]
        constraints = [models.UniqueConstraint(fields=["tenant", "month"],
                                               name="monthly_usage_tenant_month_uniq")]
