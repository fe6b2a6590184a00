"""What the tenancy layer tells the layers above it: named signals, sent inside the
transaction that made the change (a receiver's writes commit or roll back with it).

Receivers connect in their app's ``AppConfig.ready()``; the tenancy kernel imports none of
them.
"""

from django.dispatch import Signal

# A person left an organisation (``tenant``, ``user``, ``actor``): their access ends.
membership_removed = Signal()

# An organisation was suspended (``tenant``, ``actor``): nobody in it keeps access.
tenant_suspended = Signal()

# An organisation's owners let its desktops out of their own network, or shut them in
# (``tenant``, ``actor``; ``tenant.desktop_egress`` is the new value).
tenant_egress_changed = Signal()
