"""What the desktops layer tells the broker above it: named signals, sent inside the
transaction that made the change. The broker connects its receivers in
``BrokersConfig.ready()``.
"""

from django.dispatch import Signal

# Who may use a pool changed (``pool``, ``actor``): it was disabled, is being deleted, or
# its entitlements changed. Sessions of users who may no longer use it end.
pool_access_changed = Signal()

# A power operation was asked for (``desktop``, ``kind``, ``actor``, ``operation``), inside
# the transaction that records it: a receiver may refuse it by raising a ServiceError (the
# broker refuses members who don't hold the desktop) and ends the sessions it cuts short.
desktop_power_requested = Signal()
