"""The broker: sessions, from Connect to logoff, one module per concern:

- ``connect``: Connect hands a user a desktop (their live session's, a spare, or a new one);
  a tenant admin takes a desktop over;
- ``sessions``: sessions follow their desktops and console clients, run out at their pool's
  limits, and end (a floating desktop then gets its pool's ``on_logoff``);
- ``tickets``: console tickets issued to a desktop's holder, set on the host by a worker,
  and revoked when the session ends; the console proxy's browser tokens.

Every step obeys the holder rule (``brokers/holding.py``).
"""

from .tickets import (
    ConsoleTarget,
    IssuedTicket,
    console_file_ticket_issue,
    console_revoke,
    console_token_consume,
    ticket_apply,
    ticket_issue,
    token_hash,
)
from .sessions import (
    BROKEN_DESKTOP_STATES,
    session_console_event,
    session_end,
    sessions_end,
    sessions_end_for_desktop,
    sessions_end_without_access,
    sessions_expire,
    sessions_fail_for_desktop,
    sessions_ready_for_desktop,
)
from .connect import (
    ONE_LIVE_SESSION,
    ConnectResult,
    session_connect,
    session_takeover,
)
