"""One exception handler: every API error is {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import json
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import RECORDED, Forbidden, InvalidInput, ServiceError, envelope
from core.events import api_request_refused
from core.statemachine import IllegalTransition

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Refusals worth an audit entry; 401 (nobody), 404 (nothing they may see), 405 and 429 are not.
AUDITED_REFUSALS = frozenset({400, 403, 409, 415})
VERBS = {"create": "create", "update": "update", "partial_update": "update",
         "destroy": "delete"}


def error_response(status_code: int, code: str, message: str, details=None, headers=None):
    return Response(envelope(code, message, details), status=status_code, headers=headers)


def exception_handler(exc, context):
    response = _exception_response(exc, context)
    if response is not None:
        _audit_refusal(exc, context, response.status_code)
    return response


def _audit_refusal(exc, context, status_code: int) -> None:
    """A mutation refused before any service ran (permissions, validation, the
    Idempotency-Key) is audited here: ``denied`` for a 403, else ``rejected``. Refusals a
    service audited itself are not recorded twice."""
    view, request = context.get("view"), context.get("request")
    basename = getattr(view, "basename", None)
    if (request is None or request.method not in MUTATING or basename is None
            or status_code not in AUDITED_REFUSALS or getattr(exc, RECORDED, False)):
        return
    if isinstance(exc, ServiceError):
        refusal = exc
    elif status_code == 403:
        refusal = Forbidden(_message(exc))
    else:
        refusal = InvalidInput(_message(exc), code=getattr(exc, "default_code", "invalid"))
    action = getattr(view, "action", None) or request.method.lower()
    access = getattr(view, "access", None)
    api_request_refused.send(
        sender=type(view), refusal=refusal, tenant=access.tenant if access else None,
        action=f"{basename}.{VERBS.get(action, action)}", target=_model_of(view),
        object_id=view.kwargs.get(view.lookup_url_kwarg or view.lookup_field))


def _message(exc) -> str:
    detail = getattr(exc, "detail", None) or str(exc)
    return (json.dumps(detail) if isinstance(detail, dict | list) else str(detail))[:500]


def _model_of(view):
    return getattr(view, "model", None) or view.get_serializer_class().Meta.model


def _exception_response(exc, context):
    if isinstance(exc, ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, IllegalTransition):
        return error_response(status.HTTP_409_CONFLICT, "invalid_state", str(exc),
                              {"state": exc.current})
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = envelope("invalid", "The request is not valid.", details)
        return response
    detail = getattr(exc, "detail", "")
    code = detail.code if hasattr(detail, "code") else getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.status_code = status.HTTP_401_UNAUTHORIZED
    details = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        details["retry_after"] = int(exc.wait)
    response.data = envelope(code, str(detail), details)
    return response
