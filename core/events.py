"""What the kit tells the layers above it (the whole list of events: config/events.py)."""

from django.dispatch import Signal

# An API mutation was refused before any service ran (permissions, validation, the
# Idempotency-Key): ``refusal`` (a ServiceError), ``tenant`` (or None), ``action``,
# ``target`` (the model), ``object_id``. The tenancy layer audits it.
api_request_refused = Signal()

# Fields a log line adds from the current request or task: each receiver returns a dict
# (the tenancy layer adds the organisation in scope).
log_context_requested = Signal()
