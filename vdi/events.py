"""What the desktops layer tells the broker above it: named signals, sent inside the
transaction that made the change. The broker connects its receivers in
``BrokersConfig.ready()`` (the whole list of events: config/events.py).
"""

from django.dispatch import Signal

# Who may use a pool changed (``pool``, ``actor``): it was disabled, is being deleted, or
# its entitlements changed. Sessions of users who may no longer use it end.
pool_access_changed = Signal()

# A power operation was asked for (``desktop``, ``kind``, ``actor``, ``operation``), inside
# the transaction that records it: a receiver may refuse it by raising a ServiceError (the
# broker refuses members who don't hold the desktop) and ends the sessions it cuts short.
desktop_power_requested = Signal()

# A desktop became running (``desktop``), its console ports known: the sessions waiting for
# it become ready.
desktop_running = Signal()

# A desktop was lost (``desktop``): stopped or deleted outside the portal, or its host
# stopped answering. Its sessions end.
desktop_lost = Signal()

# A desktop could not be prepared (``desktop``): an operation on it failed for good. The
# sessions waiting for it end.
desktop_failed = Signal()
