"""What the hosts layer tells the layers above it, and asks of them: named signals. The
desktops layer connects its receivers in ``VdiConfig.ready()``, the broker in
``BrokersConfig.ready()`` (the whole list of events: config/events.py). Hosts know no
desktop: whatever lives on a host answers for itself."""

from django.dispatch import Signal

# A host stopped answering (``host``, ``reason``): what runs there is in doubt until it
# answers again.
host_unreachable = Signal()

# A host listed its domains (``host``, ``domains``: name -> PowerState, ``seen_at``). Each
# receiver settles its own rows and returns ``(changed, known)``: the names it changed (with
# what they became) and every domain name it owns on the host.
host_domains_listed = Signal()

# A host reported one event about a domain (``host``, ``event``: a DomainEvent,
# ``seen_at``): a power change or a console client's login or logout.
domain_event = Signal()

# Placement asks what the hosts' guests commit: each receiver returns a dict of queryset
# annotations on Host (``used_vcpus``, ``used_memory``, ``desktop_count``) ...
host_usage_requested = Signal()

# ... and how many guests are still waiting to be placed (an int).
placement_backlog_requested = Signal()
