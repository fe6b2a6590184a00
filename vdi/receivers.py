"""The desktops' answers to the tenancy layer's events (tenants/events.py)."""

from __future__ import annotations

from .tasks import desktops_traffic_filter_apply_task
from core.taskutils import send_on_commit


def on_tenant_egress_changed(sender, *, tenant, **kwargs) -> None:
    """The organisation's desktops are let out of their network, or kept in: their traffic
    filters change once the setting commits, running desktops included."""
    send_on_commit(desktops_traffic_filter_apply_task, str(tenant.pk))
