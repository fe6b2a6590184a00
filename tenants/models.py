import functools
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, RegexValidator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from core.choices import tone_property
from core.naming import validate_printable

from .choices import ADMIN_ROLES, AuditResult, AuditSource, Role, TenantStatus
from .scoping import TenantScopedManager, TenantScopedQuerySet

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and inner hyphens.",
)


QUOTA_MAX = 2_147_483_647


def default_quota(name: str) -> int | None:
    """The platform's default for a new organisation's quota ``name`` (None: unlimited)."""
    return settings.VDI["DEFAULT_TENANT_QUOTAS"][name]


class Tenant(models.Model):
    """A customer organisation. Platform-owned: only staff create and suspend tenants."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200, validators=[validate_printable])
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE
    )
    # Quotas: null means unlimited. A new organisation starts with the platform's defaults
    # (VDI_DEFAULT_TENANT_MAX_*) unless its creator gives a quota, null included.
    # The same bound on every database (PostgreSQL's integer), not SQLite's wider one.
    max_desktops = models.PositiveIntegerField(
        null=True, blank=True, default=functools.partial(default_quota, "max_desktops"),
        validators=[MaxValueValidator(QUOTA_MAX)])
    max_vcpus = models.PositiveIntegerField(
        null=True, blank=True, default=functools.partial(default_quota, "max_vcpus"),
        validators=[MaxValueValidator(QUOTA_MAX)])
    max_memory_mb = models.PositiveIntegerField(
        null=True, blank=True, default=functools.partial(default_quota, "max_memory_mb"),
        validators=[MaxValueValidator(QUOTA_MAX)])
    max_sessions = models.PositiveIntegerField(
        null=True, blank=True, default=functools.partial(default_quota, "max_sessions"),
        validators=[MaxValueValidator(QUOTA_MAX)], help_text="Concurrent sessions.",
    )
    desktop_egress = models.BooleanField(
        default=False,
        help_text="The organisation's desktops may reach beyond their own network (the "
                  "host, and the outside where the host offers a way out); off: only each "
                  "other. Set by its owners.",
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


class InvitationState(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"
    REVOKED = "revoked", "Revoked"


# The states the API shows: ``expired`` is a pending invitation past its expiry.
INVITATION_STATES = [*InvitationState.choices, ("expired", "Expired")]


class InvitationQuerySet(TenantScopedQuerySet):
    def open(self):
        """Pending and not expired: can still be accepted."""
        return self.filter(state=InvitationState.PENDING, expires_at__gt=timezone.now())

    def addressed_to(self, user):
        """The invitations ``user`` may accept or decline: those for their account, and those
        by e-mail to their address that name no single account."""
        mine = models.Q(user=user)
        if user.email:
            mine |= models.Q(user__isnull=True, email__iexact=user.email)
        return self.filter(mine)


class Invitation(TenantOwnedModel):
    """An offer to join the organisation with a role, which only the invited person can take
    up (or decline): owners and admins never add an existing account by themselves.

    Made for a username or for an e-mail address. ``user`` is the account that may accept
    it: the one with that username, the one with that address (created for a new address),
    or none, when the username names no active account (then it can never be accepted, not
    even by an account given that name later: it only waits for its expiry or revocation) or
    several accounts share the address (then any of them may take it up). The inviter sees
    the same either way; only platform staff see ``user``.

    The e-mailed link carries a random token, stored hashed: it works until the invitation
    is accepted, declined, revoked, renewed or expires.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    username = models.CharField(max_length=150, blank=True,
                                help_text="As the inviter gave it (an invitation by username).")
    email = models.EmailField(max_length=254, blank=True,
                              help_text="The address invited (an invitation by e-mail).")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", help_text="The account that may accept it; empty: none can "
                                    "(or, by e-mail, the accounts with the address).")
    inviter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                null=True, blank=True, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    state = models.CharField(max_length=16, choices=InvitationState.choices,
                             default=InvitationState.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager.from_queryset(InvitationQuerySet)()

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["tenant", "state"], name="invitation_tenant_state_idx")]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"],
                                    condition=models.Q(state="pending"),
                                    name="invitation_tenant_user_pending_uniq"),
            models.CheckConstraint(condition=~models.Q(username="", email=""),
                                   name="invitation_username_or_email"),
        ]

    def __str__(self) -> str:
        return f"{self.username or self.email} to {self.tenant} ({self.state})"

    @property
    def addressee(self) -> str:
        """Whom the inviter asked for, as they gave it: never more than they know."""
        return self.username or self.email

    @property
    def is_open(self) -> bool:
        """Pending and not yet expired: it can still be accepted."""
        return self.state == InvitationState.PENDING and timezone.now() < self.expires_at

    @property
    def current_state(self) -> str:
        """``state``, or ``expired`` for a pending invitation past its expiry."""
        if self.state == InvitationState.PENDING and not self.is_open:
            return "expired"
        return self.state

    def is_for(self, user) -> bool:
        """Whether ``user`` may accept or decline it (``InvitationQuerySet.addressed_to``)."""
        if not (user.is_authenticated and user.is_active):
            return False
        if self.user_id is not None:
            return self.user_id == user.pk
        return bool(self.email and user.email) and self.email.casefold() == user.email.casefold()


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
    in Django admin; so has the one thing about a tenant's own object that its admins must
    not learn: whether an invitation reached an account (``invitation.deliver``). A tenant
    with entries can't be deleted (``PROTECT``; suspend it instead), so its trail is never
    lost with it. Deleting a user empties ``actor`` (the one change allowed) and their
    entries keep ``actor_name``.
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
    result_tone = tone_property("result", AuditResult)
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
