"""Who is acting, through what, from where: one context per request or task.

``RequestContextMiddleware`` binds it for each HTTP request and ``platform_task`` for each
Celery task; the audit trail (``tenants.audit``) and the JSON log formatter
read it, so no service has to pass the caller's address or request id along by hand.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from django.conf import settings

logger = logging.getLogger(__name__)

class Source:
    API = "api"
    PORTAL = "portal"
    ADMIN = "admin"
    TASK = "task"
    SYSTEM = "system"  # management commands, the shell, beat-free code paths


@dataclass(frozen=True)
class RequestContext:
    request_id: str | None = None
    source: str = Source.SYSTEM
    source_ip: str | None = None
    # The HTTP request, when there is one: DRF authenticates tokens inside the view, so the
    # acting user is read from it lazily (DRF sets the underlying request's ``user``).
    request: object | None = None
    # Work left for the end of the request or task, once its transactions are over (see
    # ``defer``); None outside one.
    deferred: list[Callable[[], None]] | None = None

    @property
    def user(self):
        user = getattr(self.request, "user", None)
        return user if getattr(user, "is_authenticated", False) else None


_current: ContextVar[RequestContext] = ContextVar("vdi_request_context", default=RequestContext())


def current() -> RequestContext:
    return _current.get()


@contextmanager
def bind(**changes) -> Iterator[RequestContext]:
    """Run the block with the current context updated by ``changes``."""
    token = _current.set(replace(_current.get(), **changes))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def defer(callback: Callable[[], None]) -> bool:
    """Run ``callback`` when the current request or task ends, after every transaction it
    opened has committed or rolled back. False when there is no request or task: the caller
    runs it itself."""
    deferred = _current.get().deferred
    if deferred is None:
        return False
    deferred.append(callback)
    return True


@contextmanager
def boundary(**changes) -> Iterator[RequestContext]:
    """``bind`` for a whole request or task: what it defers runs as it ends, even when it
    fails. A deferred callback that fails is logged, never the caller's problem."""
    with bind(deferred=[], **changes) as bound:
        try:
            yield bound
        finally:
            for callback in bound.deferred:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - one failure must not hide the others
                    logger.exception("deferred work at the end of request %s failed",
                                     bound.request_id)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def client_ip(request) -> str | None:
    """The client's address: the connection's, or behind N trusted reverse proxies
    (``REST_FRAMEWORK["NUM_PROXIES"]``) the Nth address from the right of X-Forwarded-For.
    A client-supplied header is never trusted beyond that."""
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return remote


def request_source(path: str) -> str:
    if path.startswith("/" + getattr(settings, "ADMIN_URL", "admin/")):
        return Source.ADMIN
    if path.startswith("/api/"):
        return Source.API
    return Source.PORTAL


class RequestContextMiddleware:
    """Binds the request's context and answers with its id in ``X-Request-ID``.

    A well-formed ``X-Request-ID`` from the client (or its proxy) is kept, so one id follows
    a request through the load balancer, our logs and the tasks it enqueues."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id
        with boundary(request_id=request_id, source=request_source(request.path),
                      source_ip=client_ip(request), request=request):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
