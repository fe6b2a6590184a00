from django.db import models


class VirtType(models.TextChoices):
    KVM = "kvm", "KVM (hardware accelerated)"
    QEMU = "qemu", "QEMU TCG (emulated; labs and CI)"


class HostState(models.TextChoices):
    NEW = "new", "New"
    UP = "up", "Up"
    DOWN = "down", "Down"
    MAINTENANCE = "maintenance", "Maintenance"
