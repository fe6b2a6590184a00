"""Which error text a reader sees. libvirt's own words (host names, paths, volume and
domain names) are for platform staff; everyone else reads one plain sentence per kind of
failure. The API's serializers and the portal's pages both ask here; Django admin, being
staff-only, shows the stored text."""

from __future__ import annotations

from .choices import DesktopState, OperationKind

PLATFORM_HAS_DETAILS = "the platform team has the details."
OPERATION_FAILED = {
    OperationKind.PROVISION: "The desktop could not be created",
    OperationKind.START: "The desktop could not be started",
    OperationKind.SHUTDOWN: "The desktop could not be shut down",
    OperationKind.POWEROFF: "The desktop could not be powered off",
    OperationKind.REBOOT: "The desktop could not be restarted",
    OperationKind.RESET: "The desktop could not be reset to its image",
    OperationKind.DELETE: "The desktop could not be deleted",
}
DESKTOP_TROUBLE = {
    DesktopState.ERROR: "The desktop ran into a problem",
    DesktopState.UNKNOWN: "The desktop's host is not answering",
}
POOL_PROVISIONING_FAILED = "New desktops for this pool could not be created"


def _sentence(start: str) -> str:
    return f"{start}; {PLATFORM_HAS_DETAILS}"


def may_read_raw_errors(user) -> bool:
    return bool(user is not None and getattr(user, "is_staff", False))


def operation_error_for(*, kind: str, error: str, user) -> str:
    """An operation's ``error`` as ``user`` may read it."""
    if not error or may_read_raw_errors(user):
        return error
    return _sentence(OPERATION_FAILED.get(kind, "The operation failed"))


def desktop_error_for(*, state: str, error: str, user) -> str:
    """A desktop's ``last_error`` as ``user`` may read it."""
    if not error or may_read_raw_errors(user):
        return error
    return _sentence(DESKTOP_TROUBLE.get(state, "The desktop stopped unexpectedly"))


def pool_provisioning_problem(pool, *, user) -> dict | None:
    """While the pool's provisioning keeps failing (``pool_list_for_user`` counts it),
    ``{message, since, failures}`` as ``user`` may read it; else None."""
    failures = getattr(pool, "provisioning_failures", None)
    if not failures:
        return None
    error = pool.provisioning_last_error or ""
    message = error if error and may_read_raw_errors(user) else _sentence(
        POOL_PROVISIONING_FAILED)
    return {"message": message, "since": pool.provisioning_failing_since, "failures": failures}


def audit_details_for(*, action: str, details, user):
    """An audit entry's ``details`` as ``user`` may read them: a failed operation's entry
    keeps libvirt's words, which only platform staff read."""
    kind = action.removeprefix("desktop.")
    if kind in OperationKind.values and isinstance(details, dict) and details.get("error"):
        return {**details, "error": operation_error_for(kind=kind, error=details["error"],
                                                         user=user)}
    return details
