import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from tenants.models import Tenant, TenantOwnedModel
from tenants.scoping import TenantOrSharedManager

from .choices import (
    DesktopState,
    ImageBoot,
    OnLogoff,
    OperationKind,
    OperationState,
    PoolKind,
    Protocol,
)
from core.choices import tone_property
from core.limits import TICKET_TTL_MAX_S, TICKET_TTL_MIN_S
from core.naming import single_line, validate_printable


class Image(TenantOwnedModel):
    """A golden image: a qcow2 base volume that desktops are linked clones of.

    Public images (tenant null) are shared by every tenant; others are a tenant's own.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="+",
        help_text="Empty for a public image.",
    )
    name = models.CharField(max_length=100, validators=[validate_printable])
    version = models.PositiveIntegerField(default=1)
    os = models.CharField(max_length=100, blank=True, default="")
    base_volume = models.CharField(
        max_length=255, help_text="Name of the qcow2 base volume in each host's storage pool."
    )
    disk_gb = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1)])
    default_vcpus = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    default_memory_mb = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(64)]
    )
    boot = models.CharField(max_length=8, choices=ImageBoot.choices, default=ImageBoot.DISK)
    kernel = models.CharField(max_length=255, blank=True, default="")
    initrd = models.CharField(max_length=255, blank=True, default="")
    cmdline = models.CharField(max_length=1024, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantOrSharedManager()

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name", "version"], name="image_tenant_name_version_uniq"
            ),
            models.UniqueConstraint(
                fields=["name", "version"],
                condition=models.Q(tenant__isnull=True),
                name="image_public_name_version_uniq",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def clean(self):
        if self.boot == ImageBoot.KERNEL and not self.kernel:
            raise ValidationError({"kernel": "A kernel path is required for direct kernel boot."})


class Pool(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, validators=[validate_printable])
    description = models.CharField(max_length=500, blank=True, default="")
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="pools")
    kind = models.CharField(max_length=16, choices=PoolKind.choices, default=PoolKind.FLOATING)
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.SPICE)
    vcpus = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(64)]
    )
    memory_mb = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(64), MaxValueValidator(1024 * 1024)]
    )
    min_ready = models.PositiveIntegerField(default=0, help_text="Running spares (L1 cache).")
    min_stopped = models.PositiveIntegerField(default=0, help_text="Stopped spares (L2 cache).")
    max_desktops = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)],
        help_text="At most the platform's VDI_POOL_MAX_DESKTOPS.",
    )
    max_per_user = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    idle_timeout_s = models.PositiveIntegerField(null=True, blank=True)
    max_session_s = models.PositiveIntegerField(null=True, blank=True)
    on_logoff = models.CharField(max_length=16, choices=OnLogoff.choices, default=OnLogoff.RECYCLE)
    ticket_ttl_s = models.PositiveIntegerField(
        null=True, blank=True,
        validators=[MinValueValidator(TICKET_TTL_MIN_S), MaxValueValidator(TICKET_TTL_MAX_S)],
        help_text="Console ticket lifetime; empty for the platform default.",
    )
    entitle_all_members = models.BooleanField(
        default=True, help_text="Every member may use the pool; otherwise only listed users."
    )
    enabled = models.BooleanField(default=True)
    deleting_since = models.DateTimeField(
        null=True, blank=True,
        help_text="Set when the pool is being deleted: its desktops go, then the pool.",
    )
    autoscale_queued_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set while a run of the autoscaler is queued and not started: a storm of "
                  "Connects queues one run, not one each.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="pool_tenant_name_uniq")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        platform_max = settings.VDI["POOL_MAX_DESKTOPS"]
        if self.max_desktops is not None and self.max_desktops > platform_max:
            raise ValidationError(
                {"max_desktops": f"The platform allows at most {platform_max} desktops per pool."}
            )
        if self.min_ready + self.min_stopped > self.max_desktops:
            raise ValidationError(
                {"max_desktops": "Must be at least min_ready + min_stopped."}
            )
        if self.image_id and self.tenant_id:
            image_tenant = Image._base_manager.filter(pk=self.image_id).values_list(
                "tenant_id", flat=True
            ).first()
            if image_tenant not in (None, self.tenant_id):
                raise ValidationError({"image": "Unknown image."})

    @property
    def is_deleting(self) -> bool:
        return self.deleting_since is not None

    @property
    def effective_ticket_ttl_s(self) -> int:
        return self.ticket_ttl_s or settings.VDI["TICKET_TTL_S"]


class PoolEntitlement(TenantOwnedModel):
    """A user listed on a pool that is not open to every member."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="entitlements")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "pool", "user"], name="entitlement_tenant_pool_user_uniq"
            )
        ]


class Desktop(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="desktops")
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="desktops")
    name = models.CharField(max_length=64, unique=True, validators=[validate_printable],
                            help_text="libvirt domain name.")
    host = models.ForeignKey(
        "hypervisors.Host", on_delete=models.PROTECT, null=True, blank=True,
        related_name="desktops",
    )
    assigned_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="desktops",
    )
    state = models.CharField(
        max_length=16, choices=DesktopState.choices, default=DesktopState.PENDING
    )
    state_tone = tone_property("state", DesktopState)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    volume_name = models.CharField(max_length=255, blank=True, default="")
    spice_port = models.IntegerField(null=True, blank=True)
    spice_tls_port = models.IntegerField(null=True, blank=True)
    vnc_port = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    needs_reset = models.BooleanField(
        default=False,
        help_text="A floating desktop someone has used: it goes back to its image before "
                  "anyone else may have it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pool", "name"]
        indexes = [
            models.Index(fields=["tenant", "pool", "state"]),
            # The spares a Connect claims, oldest first: the claim reads one entry, not every
            # desktop of the pool.
            models.Index(fields=["pool", "state", "created_at"], name="desktop_spare_idx",
                         condition=models.Q(assigned_user__isnull=True, needs_reset=False)),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def domain_title(self) -> str:
        """The libvirt domain's title: one line, whatever the pool's name holds."""
        return single_line(f"{self.pool.name} / {self.name}")


class Operation(TenantOwnedModel):
    """One state change of a desktop: the row is the truth, tasks only carry its id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=OperationKind.choices)
    state = models.CharField(
        max_length=16, choices=OperationState.choices, default=OperationState.PENDING
    )
    state_tone = tone_property("state", OperationState)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    desktop = models.ForeignKey(
        Desktop, on_delete=models.SET_NULL, null=True, blank=True, related_name="operations"
    )
    pool = models.ForeignKey(
        Pool, on_delete=models.SET_NULL, null=True, blank=True, related_name="operations"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", help_text="Empty when the platform acted on its own.",
    )
    params = models.JSONField(default=dict, blank=True)
    waiting_for = models.CharField(
        max_length=32, blank=True, default="",
        help_text="What a pending operation waits for (e.g. a boot slot on its host).",
    )
    boot_host = models.ForeignKey(
        "hypervisors.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="Set while this operation holds one of the host's boot slots.",
    )
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "deadline_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.state}"

    @property
    def is_finished(self) -> bool:
        return self.state in (OperationState.SUCCEEDED, OperationState.FAILED)
