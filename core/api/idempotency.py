"""``Idempotency-Key`` for mutating API requests.

A client that is unsure whether its request arrived (a time-out, a dropped connection) sends
it again with the same key: the first answer is replayed, and the work is not done twice.
Keys belong to the user, live ``VDI_IDEMPOTENCY_TTL_H`` hours, and a key reused for a different
request is refused. Secrets in an answer (a console password, a token) are not stored: a
replayed ticket has ``password: null``; ask ``sessions/{id}/ticket/`` for a fresh one.
"""

from __future__ import annotations

import hashlib
import json

from django.db import IntegrityError, transaction
from django.http.request import RawPostDataException
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from core.errors import Conflict, InvalidInput
from core.models import IdempotentRequest
from core.secrets import is_secret_key

HEADER = "Idempotency-Key"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLAYED_HEADERS = ("Retry-After", "Location", "Content-Type")


class _Replay(Exception):
    def __init__(self, record: IdempotentRequest):
        self.record = record


def _redacted(data):
    if isinstance(data, dict):
        return {k: None if is_secret_key(k) else _redacted(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_redacted(item) for item in data]
    return data


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.get_full_path()):
        digest.update(part.encode() + b"\0")
    try:
        digest.update(request._request.body)
    except RawPostDataException:  # a multipart body already streamed into request.data
        digest.update(repr(sorted(request.data.items())).encode())
    return digest.hexdigest()


class IdempotentMixin:
    """For API views: honour ``Idempotency-Key`` on mutating requests."""

    _idempotent_request: IdempotentRequest | None = None

    def initial(self, request, *args, **kwargs):
        # Authentication and tenant resolution first: keys are per user, and a request that
        # was never allowed leaves no record.
        super().initial(request, *args, **kwargs)
        self._idempotent_request = None
        key = request.headers.get(HEADER)
        if key is None or request.method not in MUTATING or not request.user.is_authenticated:
            return
        if not 1 <= len(key) <= 255:
            raise InvalidInput(f"{HEADER} must be 1 to 255 characters.",
                               details={"header": HEADER})
        fingerprint = _fingerprint(request)
        try:
            with transaction.atomic():
                self._idempotent_request = IdempotentRequest.objects.create(
                    user=request.user, key=key, fingerprint=fingerprint)
            return
        except IntegrityError:
            record = IdempotentRequest.objects.get(user=request.user, key=key)
        if record.fingerprint != fingerprint:
            raise Conflict(f"This {HEADER} was used for a different request.",
                           code="idempotency_key_reused")
        if record.status_code is None:
            raise Conflict(f"A request with this {HEADER} is still in progress.",
                           code="idempotency_key_in_use")
        raise _Replay(record)

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            record = exc.record
            response = Response(record.response, status=record.status_code,
                                headers={k: v for k, v in record.headers.items()
                                         if k != "Content-Type"})
            response["Idempotent-Replayed"] = "true"
            return response
        try:
            return super().handle_exception(exc)
        except Exception:
            if self._idempotent_request is not None:  # a crash: nothing to replay
                self._idempotent_request.delete()
                self._idempotent_request = None
            raise

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record = self._idempotent_request
        if record is not None:
            self._idempotent_request = None
            if response.status_code >= 500:
                record.delete()  # nothing was settled: let the client try again
            else:
                record.status_code = response.status_code
                # Through DRF's encoder: UUIDs, dates and decimals as the client saw them.
                data = json.loads(json.dumps(getattr(response, "data", None), cls=JSONEncoder))
                record.response = _redacted(data)
                record.headers = {h: response[h] for h in REPLAYED_HEADERS if h in response}
                record.save(update_fields=["status_code", "response", "headers"])
        return response
