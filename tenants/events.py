"""What the tenancy layer tells the layers above it: named signals, sent inside the
transaction that made the change (a receiver's writes commit or roll back with it).

Receivers connect in their app's ``AppConfig.ready()``; the tenancy kernel imports none of
them (the whole list of events: config/events.py).
"""

from django.dispatch import Signal

# A person left an organisation (``tenant``, ``user``, ``actor``): their access ends.
membership_removed = Signal()

# An organisation was suspended (``tenant``, ``actor``): nobody in it keeps access.
tenant_suspended = Signal()

# An organisation's owners let its desktops out of their own network, or shut them in
# (``tenant``, ``actor``; ``tenant.desktop_egress`` is the new value).
tenant_egress_changed = Signal()

# The tenancy layer asks what is in use against an organisation's quotas (``tenant``): each
# receiver returns ``{quota name: amount}`` for what it holds (desktops, vCPUs, memory,
# sessions).
quota_usage_requested = Signal()

# The tenancy layer asks how ``user`` may read an audit entry's ``details`` (``action``,
# ``details``): a receiver returns the details to show, or None to leave them as they are.
audit_details_requested = Signal()
