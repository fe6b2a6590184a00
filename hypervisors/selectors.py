from .models import Host


def simulated_hosts_in_use() -> bool:
    """True when an enabled host is libvirt's test driver: its consoles never answer."""
    return Host.objects.filter(enabled=True, uri__startswith="test").exists()
