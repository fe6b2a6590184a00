from vdi.taskutils import platform_task

from .models import Host
from .services import host_probe


@platform_task("hypervisors.host_probe", acks_late=True)
def host_probe_task(host_id: str, **_kwargs) -> None:
    host = Host.objects.filter(pk=host_id).first()
    if host is not None:
        host_probe(host=host)


@platform_task("hypervisors.hosts_probe")
def hosts_probe_task(**_kwargs) -> None:
    for host_id in Host.objects.filter(enabled=True).values_list("id", flat=True):
        host_probe_task.delay(str(host_id))
