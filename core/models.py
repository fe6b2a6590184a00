"""The kit's one model: the record of a request made with an ``Idempotency-Key``."""

from django.conf import settings
from django.db import models


class IdempotentRequest(models.Model):
    """A mutating API request made with an ``Idempotency-Key``: the same key from the same
    user replays the recorded answer instead of doing the work again."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True,
                                                   help_text="Empty while the first is running.")
    response = models.JSONField(null=True, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key_uniq")]
        indexes = [models.Index(fields=["created_at"], name="vdi_idempot_created_eb6ac9_idx")]
        # The table it had when the desktops app held it: moving the model kept the rows.
        db_table = "vdi_idempotentrequest"
