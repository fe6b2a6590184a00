"""One error hierarchy for services; the API renders it as the SPEC's error envelope."""

from __future__ import annotations

from django.http import JsonResponse

# Set on an exception once an audit entry records it, so that callers up the stack (an
# enclosing ``audited`` block, the API's error handler) don't record it again.
RECORDED = "_audit_recorded"


def envelope(code: str, message: str, details: dict | None = None) -> dict:
    """The one error envelope of every API answer (SPEC §4)."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def api_error(request, status: int, code: str, message: str, details: dict | None = None):
    """The API's error envelope for an answer made outside DRF (error pages, the login
    lockout), or None for a request that is not the API's."""
    if not request.path.startswith("/api/"):
        return None
    return JsonResponse(envelope(code, message, details), status=status)


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class InvalidInput(ServiceError):
    status = 400
    code = "invalid"


class Forbidden(ServiceError):
    status = 403
    code = "permission_denied"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class QuotaExceeded(Conflict):
    code = "quota_exceeded"
