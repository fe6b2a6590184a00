from .choices import HostState
from .models import SIMULATED_URI_PREFIX, Host


def simulated_hosts_in_use() -> bool:
    """True when the desktops can only be on libvirt's test driver: a host that is up is
    simulated and none that is up runs a real hypervisor, so no console answers."""
    up = Host.objects.filter(state=HostState.UP)
    return (up.filter(uri__startswith=SIMULATED_URI_PREFIX).exists()
            and not up.exclude(uri__startswith=SIMULATED_URI_PREFIX).exists())
