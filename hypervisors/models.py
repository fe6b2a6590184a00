import uuid

from django.core.validators import MinValueValidator
from django.db import models

from .choices import HostState, VirtType


class Host(models.Model):
    """A KVM hypervisor. Platform-owned: shared by every tenant, managed by staff."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField(
        max_length=255, help_text="libvirt URI, e.g. qemu+tls://kvm1.example.com/system"
    )
    virt_type = models.CharField(max_length=8, choices=VirtType.choices, default=VirtType.KVM)
    console_address = models.CharField(
        max_length=255, help_text="Address console clients dial to reach this host's guests."
    )
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=HostState.choices, default=HostState.NEW)
    cpus = models.PositiveIntegerField(default=0, help_text="Discovered physical CPUs.")
    memory_mb = models.PositiveIntegerField(default=0, help_text="Discovered memory.")
    cpu_overcommit = models.FloatField(default=4.0, validators=[MinValueValidator(0.1)])
    memory_overcommit = models.FloatField(default=1.0, validators=[MinValueValidator(0.1)])
    max_concurrent_boots = models.PositiveIntegerField(
        default=4, validators=[MinValueValidator(1)], help_text="Storm control."
    )
    storage_pool = models.CharField(max_length=100, default="default")
    network = models.CharField(
        max_length=100, blank=True, default="", help_text="libvirt network for desktops."
    )
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_simulated(self) -> bool:
        """libvirt's test driver: domains exist but no guest runs and no console answers."""
        return self.uri.startswith("test")

    @property
    def vcpu_capacity(self) -> int:
        return int(self.cpus * self.cpu_overcommit)

    @property
    def memory_capacity_mb(self) -> int:
        return int(self.memory_mb * self.memory_overcommit)
