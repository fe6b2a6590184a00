from datetime import datetime

from tenants.taskutils import platform_task

from .services import sessions_expire
from .services.tickets import console_revoke, ticket_apply


# Both run on the "console" queue (CELERY_TASK_ROUTES): tickets never wait behind
# provisioning work, and a cut follows the tickets it revokes.
@platform_task("brokers.ticket_apply")
def ticket_apply_task(session_id: str, kind: str, protocol: str, password: str,
                      valid_until: str, token_hash: str | None = None, issued_by=None,
                      takeover: bool = False, **_kwargs) -> dict:
    return ticket_apply(session_id=session_id, kind=kind, protocol=protocol, password=password,
                        valid_until=datetime.fromisoformat(valid_until), token_hash=token_hash,
                        issued_by=issued_by, takeover=takeover)


@platform_task("brokers.console_revoke")
def console_revoke_task(desktop_id: str, **_kwargs) -> bool:
    return console_revoke(desktop_id=desktop_id)


@platform_task("brokers.sessions_expire")
def sessions_expire_task(**_kwargs) -> int:
    return sessions_expire()
