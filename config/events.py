"""Every event of the project, in one list: who sends it (the layer whose module defines
it) and who answers (connected in each app's ``AppConfig.ready()``). A lower layer tells or
asks an upper one only through these; ``tests/test_boundaries.py`` checks that the list is
complete and that every event has a receiver.

Each event is a Django signal, sent inside the transaction that made the change (a
receiver's writes commit or roll back with it). Those marked *asks* collect their
receivers' answers (``Signal.send`` returns them)."""

from core import events as core_events
from hypervisors import events as host_events
from tenants import events as tenant_events
from vdi import events as vdi_events

# (signal, sent by, answered by, what it means)
EVENTS = [
    (core_events.api_request_refused, "core", "tenants",
     "an API mutation was refused before any service ran: it is audited"),
    (core_events.log_context_requested, "core", "tenants",
     "asks: the fields a log line adds (the organisation in scope)"),
    (tenant_events.membership_removed, "tenants", "brokers",
     "a person left an organisation: their sessions end, floating desktops are released"),
    (tenant_events.tenant_suspended, "tenants", "brokers",
     "an organisation was suspended: every session in it ends"),
    (tenant_events.tenant_egress_changed, "tenants", "vdi",
     "an organisation let its desktops out of its network, or shut them in"),
    (tenant_events.quota_usage_requested, "tenants", "vdi, brokers",
     "asks: what is in use against the quotas (desktops, vCPUs, memory; sessions)"),
    (tenant_events.audit_details_requested, "tenants", "vdi",
     "asks: an audit entry's details as a reader may see them"),
    (host_events.host_unreachable, "hypervisors", "vdi",
     "a host stopped answering: its settled desktops become unknown"),
    (host_events.host_domains_listed, "hypervisors", "vdi",
     "asks: reconciliation settles the desktops on a host and names the domains it owns"),
    (host_events.domain_event, "hypervisors", "vdi, brokers",
     "a host reported a domain's power change (vdi) or a console login/logout (brokers)"),
    (host_events.host_usage_requested, "hypervisors", "vdi",
     "asks: what the guests on each host commit (placement, hosts API, admin, metrics)"),
    (host_events.placement_backlog_requested, "hypervisors", "vdi",
     "asks: how many guests wait for a host"),
    (vdi_events.pool_access_changed, "vdi", "brokers",
     "who may use a pool changed: sessions of those who may not end"),
    (vdi_events.desktop_power_requested, "vdi", "brokers",
     "a power operation was asked for: only the holder may, and it may end sessions"),
    (vdi_events.desktop_running, "vdi", "brokers",
     "a desktop became running: the sessions waiting for it are ready"),
    (vdi_events.desktop_lost, "vdi", "brokers",
     "a desktop was lost (outside the portal, or its host went away): its sessions end"),
    (vdi_events.desktop_failed, "vdi", "brokers",
     "a desktop could not be prepared: the sessions waiting for it end"),
]
