from tenants.taskutils import platform_task

from .models import Host
from .services import host_check


@platform_task("hypervisors.host_check", acks_late=True, ignore_result=True)
def host_check_task(host_id: str, **_kwargs) -> None:
    # Safe to redeliver: a check only reads the host and settles the database to match.
    host = Host.objects.filter(pk=host_id).first()
    if host is not None:
        host_check(host=host)


@platform_task("hypervisors.hosts_check")
def hosts_check_task(**_kwargs) -> None:
    """Beat: check every host, one task each, so a hung host delays only its own check."""
    for host_id in Host.objects.values_list("id", flat=True):
        host_check_task.apply_async((str(host_id),), expires=55)
