from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import IdempotentRequest
from .taskutils import task


def idempotency_keys_expire() -> int:
    """Forget Idempotency-Keys older than IDEMPOTENCY_TTL_H hours."""
    cutoff = timezone.now() - timedelta(hours=settings.VDI["IDEMPOTENCY_TTL_H"])
    deleted, _ = IdempotentRequest.objects.filter(created_at__lt=cutoff).delete()
    return deleted


@task("core.idempotency_keys_expire")
def idempotency_keys_expire_task(**_kwargs) -> int:
    return idempotency_keys_expire()
