"""The tenancy layer's answers to the kit's events (core/events.py)."""

from __future__ import annotations

from .audit import audit_failure
from .scoping import current_tenant


def on_api_request_refused(sender, *, refusal, tenant, action, target, object_id,
                           **kwargs) -> None:
    """A refused API mutation goes into the audit trail."""
    audit_failure(refusal, tenant=tenant, action=action, target=target, object_id=object_id)


def log_context(sender, **kwargs) -> dict:
    """Log lines name the organisation in scope."""
    tenant = current_tenant()
    return {"tenant": tenant.slug if tenant is not None else None}
