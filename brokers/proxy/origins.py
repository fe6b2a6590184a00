"""Which pages may open a console: the ``Origin`` of the websocket upgrade."""

from __future__ import annotations

import re

from django.conf import settings
from websockify import auth_plugins

_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|[^\s:/\[\]]+)"
                     r"(?::(?P<port>\d{1,5}|\*))?/?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _origin_parts(value: str) -> tuple[str, str, str] | None:
    """``(scheme, host, port)`` of an origin (or an allowed-origin pattern whose port may be
    ``*``), default ports made explicit; None for anything that is not an http(s) origin."""
    match = _ORIGIN.fullmatch(value.strip().lower())
    if match is None:
        return None
    scheme = match["scheme"]
    return scheme, match["host"], match["port"] or _DEFAULT_PORTS[scheme]


def allowed_origins() -> list[str]:
    return list(settings.VDI["CONSOLE_ALLOWED_ORIGINS"])


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """Exact scheme, host and port; an allowed entry's port may be ``*`` (development)."""
    if not origin:
        return False
    actual = _origin_parts(origin)
    if actual is None or "*" in actual:
        return False
    for pattern in allowed:
        wanted = _origin_parts(pattern)
        if wanted and wanted[:2] == actual[:2] and wanted[2] in ("*", actual[2]):
            return True
    return False


class OriginCheck(auth_plugins.BasePlugin):
    """A websockify auth plugin: the ``Origin`` header must be an allowed origin.

    ``src`` is a space- or comma-separated list; without it the setting
    ``VDI["CONSOLE_ALLOWED_ORIGINS"]`` (``VDI_CONSOLE_ALLOWED_ORIGINS``) applies.
    """

    def __init__(self, src=None):
        super().__init__(src)
        self.allowed = re.split(r"[\s,]+", src.strip()) if src else allowed_origins()

    def authenticate(self, headers, target_host, target_port):
        origin = headers.get("Origin")
        if not origin_allowed(origin, self.allowed):
            raise auth_plugins.InvalidOriginError(expected=self.allowed, actual=origin)
