"""The browser console proxy: websockify with our token plugin, Origin check, limits, log
masking, and consoles that close when their session ends.

``manage.py console_proxy`` runs it. A browser opens ``wss://proxy/?token=…``; the proxy

1. refuses the connection (HTTP 429 or 503, before reading it) when its client address or
   the whole proxy already has as many connections as allowed (``ConnectionLimits``);
2. refuses the upgrade (HTTP 403) unless the ``Origin`` header is one of the allowed origins
   (checked *before* the token, so a page on a foreign origin cannot burn a user's token);
3. resolves the token through ``console_token_consume``: a browser ticket's single-use,
   expiring token, stored as a SHA-256 hash, whose session is still live; anything else is
   a 403 that does not say why. All of this must finish within the handshake timeout;
4. connects the websocket to the desktop's VNC display and pipes bytes both ways; the VNC
   password itself travels inside the RFB stream, from the browser to QEMU;
5. asks every few seconds whether the session is still live, and closes the websocket
   (code 4001, with a reason the page shows) and the VNC connection once it is not;
6. tells the broker when a browser connects and disconnects (``session_console_event``).

websockify handles every connection in a **forked process** of its own (its default
``multiprocessing`` mode; ``--libserver`` ignores token plugins). The fork comes before the
token check: websockify reads the request (after the TLS handshake, serving wss://) in the
child, and reading it in the parent instead would make its one accept loop wait on each
client's bytes, so one slow client would stall every browser behind it. What the parent can
do without reading, it does: the connection limits apply before anything is forked, and a
child whose client does not finish its handshake in time is ended.

Each child opens its own database connections and closes them after each use, the parent
never holds one when it forks, and all state lives in the database: any number of proxies
can run side by side behind a load balancer.

websockify logs request paths, and paths carry tokens: ``install_token_mask`` puts a filter
on its loggers and on the root handlers that rewrites ``token=…`` to ``token=***``.

The pieces: ``server`` (websockify's handler and server, put together, and the TLS of
wss://), ``broker`` (tokens, console events, the session watch), ``limits``, ``origins``
and ``logmask``.
"""

from __future__ import annotations

from .broker import (
    SESSION_ENDED_CLOSE_CODE,
    ConsoleTokenPlugin,
    SessionWatch,
    console_event,
    console_session_ended,
    database_access,
)
from .limits import (
    AdmittingListener,
    ConnectionLimits,
    HandshakeDeadline,
    HandshakeTimeout,
    Refusal,
)
from .logmask import TokenMaskFilter, install_token_mask, mask_tokens
from .origins import OriginCheck, allowed_origins, origin_allowed
from .server import ConsoleProxyHandler, ConsoleProxyServer, build_server

__all__ = [
    "SESSION_ENDED_CLOSE_CODE", "AdmittingListener", "ConnectionLimits", "ConsoleProxyHandler",
    "ConsoleProxyServer", "ConsoleTokenPlugin", "HandshakeDeadline", "HandshakeTimeout",
    "OriginCheck", "Refusal", "SessionWatch", "TokenMaskFilter", "allowed_origins",
    "build_server", "console_event", "console_session_ended", "database_access",
    "install_token_mask", "mask_tokens", "origin_allowed",
]
