from datetime import datetime

from vdi.models import Desktop
from vdi.taskutils import platform_task

from .services import sessions_expire, ticket_apply


@platform_task("brokers.ticket_apply")
def ticket_apply_task(desktop_id: str, protocol: str, password: str, valid_until: str,
                      disconnect: bool = False, **_kwargs) -> dict:
    desktop = Desktop.objects.select_related("host").filter(pk=desktop_id).first()
    if desktop is None or desktop.host is None:
        return {"applied": False, "error": "the desktop no longer exists"}
    return ticket_apply(desktop=desktop, protocol=protocol, password=password,
                        valid_until=datetime.fromisoformat(valid_until), disconnect=disconnect)


@platform_task("brokers.sessions_expire")
def sessions_expire_task(**_kwargs) -> int:
    return sessions_expire()
