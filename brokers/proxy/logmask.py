"""Console tokens never reach a log: websockify logs request paths, and paths carry them."""

from __future__ import annotations

import logging
import re

from websockify import token_plugins
from websockify.websockifyserver import WebSockifyServer

PROXY_LOGGER = "brokers.proxy"  # what every module of the proxy logs on
_TOKEN_PATTERNS = (
    # query strings and anything shaped like one: token=abc, token%3Dabc
    (re.compile(r"(token(?:=|%3D))[^&\s'\"<>]+", re.IGNORECASE), r"\1***"),
    # websockify's own "Token 'abc' not found" (our handler never raises it, but a bare
    # websockify token plugin would)
    (re.compile(r"(Token ')[^']*(')"), r"\1***\2"),
)


def mask_tokens(text: str) -> str:
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class TokenMaskFilter(logging.Filter):
    """Rewrites a record's message (and traceback) with every console token masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_tokens(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_tokens(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_tokens(record.stack_info)
        return True


# The loggers websockify and the proxy log on. A filter on a logger sees the records
# created there before any handler does; the root handlers' filter catches the rest.
MASKED_LOGGERS = (WebSockifyServer.get_logger().name, token_plugins.logger.name,
                  "websockify", PROXY_LOGGER, "brokers.services", "brokers.tickets")


def install_token_mask() -> TokenMaskFilter:
    """Mask tokens in everything the proxy process logs. Idempotent."""
    existing = [f for f in logging.getLogger(PROXY_LOGGER).filters
                if isinstance(f, TokenMaskFilter)]
    mask = existing[0] if existing else TokenMaskFilter()
    targets = [logging.getLogger(name) for name in MASKED_LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        if mask not in target.filters:
            target.addFilter(mask)
    return mask
