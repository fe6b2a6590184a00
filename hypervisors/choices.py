from django.db import models


class VirtType(models.TextChoices):
    KVM = "kvm", "KVM (hardware accelerated)"
    QEMU = "qemu", "QEMU TCG (emulated; labs and CI)"


class HostState(models.TextChoices):
    NEW = "new", "New"
    UP = "up", "Up"
    DOWN = "down", "Down"
    MAINTENANCE = "maintenance", "Maintenance"


class NetworkMode(models.TextChoices):
    TENANT = "tenant", "An isolated libvirt network per tenant (this host only)"
    VLAN = "vlan", "A VLAN per tenant on an Open vSwitch bridge (across hosts)"
    NONE = "none", "No network: console only"
