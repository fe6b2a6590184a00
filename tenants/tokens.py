"""API tokens: issued, listed, used and revoked by their owner; all revoked when the owner's
password changes.

The tokens themselves are django-rest-knox's ``AuthToken`` rows (stored hashed, with an
expiry). What knox does not keep, a name and when the token was last used, is in
``ApiToken``, one per knox token, which also gives each token the public id it is listed and
revoked by. Tokens are the platform's, not a tenant's: a user's tokens serve every
organisation they belong to, and their audit entries have no tenant.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import is_password_usable
from django.db import models, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from knox.models import AuthToken

from .audit import FROM_CONTEXT, audited

DEFAULT_NAME = "API token"
# ``last_used_at`` is kept to the minute: a token used all the time costs one write a minute.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class RevokeReason(models.TextChoices):
    REVOKED = "revoked", "Revoked by its owner"
    PASSWORD_CHANGED = "password_changed", "The owner's password changed"
    ADMIN = "admin", "Revoked by platform staff"


class ApiToken(models.Model):
    """What we know of one knox token beyond its hash. Platform-owned (no tenant)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token = models.OneToOneField(AuthToken, on_delete=models.CASCADE, related_name="info")
    name = models.CharField(max_length=100, default=DEFAULT_NAME,
                            help_text="The owner's label for the token.")
    last_used_at = models.DateTimeField(
        help_text="When the token last authenticated a request (to the minute), or was issued.")

    class Meta:
        app_label = "tenants"
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.token.user})"


# --- selectors -------------------------------------------------------------------------------
def api_token_list(*, user) -> QuerySet[ApiToken]:
    """The user's tokens that still work, newest first, with knox's ``created_at`` and
    ``expiry`` alongside."""
    return (ApiToken.objects.filter(token__user=user)
            .filter(Q(token__expiry__isnull=True) | Q(token__expiry__gt=timezone.now()))
            .annotate(created_at=F("token__created"), expiry=F("token__expiry"))
            .order_by("-created_at", "pk"))


# --- services --------------------------------------------------------------------------------
def api_token_create(*, user, name: str = "") -> tuple[ApiToken, str]:
    """A new API token for ``user``: (its record, the token, shown once). The token is
    stored hashed and never recorded; the audit entry names the token's id."""
    name = name.strip() or DEFAULT_NAME
    with audited(action="token.create", tenant=None, target=ApiToken, actor=user,
                 details={"name": name}) as audit, transaction.atomic():
        instance, token = AuthToken.objects.create(user)
        info = ApiToken.objects.get(token=instance)  # made with it: api_token_record
        if info.name != name:
            info.name = name
            info.save(update_fields=["name"])
        audit.object_id = info.pk
        audit.details["expiry"] = instance.expiry
    return info, token


def api_token_revoke(*, token: ApiToken, actor=FROM_CONTEXT,
                     reason: str = RevokeReason.REVOKED) -> None:
    """The token stops working at once."""
    with audited(action="token.revoke", tenant=None, target=token, actor=actor,
                 details={"name": token.name, "reason": reason}):
        AuthToken.objects.filter(pk=token.token_id).delete()  # and its ApiToken with it


def api_token_revoke_all(*, user, reason: str, actor=FROM_CONTEXT) -> int:
    """Revoke every token of ``user`` (expired ones too); how many there were."""
    with transaction.atomic():
        tokens = list(ApiToken.objects.filter(token__user=user))
        for token in tokens:
            api_token_revoke(token=token, actor=actor, reason=reason)
        AuthToken.objects.filter(user=user).delete()  # any made before ApiToken existed
    return len(tokens)


def api_token_touch(*, token: AuthToken) -> None:
    """Note that ``token`` authenticated a request now. A read on every request and, at most
    once a minute per token, a write: conditional, so concurrent requests write it once."""
    now = timezone.now()
    cutoff = now - LAST_USED_RESOLUTION
    last_used_at = (ApiToken.objects.filter(token=token)
                    .values_list("last_used_at", flat=True).first())
    if last_used_at is not None and last_used_at < cutoff:
        ApiToken.objects.filter(token=token, last_used_at__lt=cutoff).update(last_used_at=now)


# --- receivers (connected in TenantsConfig.ready) --------------------------------------------
def api_token_record(sender, instance: AuthToken, created: bool, raw: bool = False, **kwargs):
    """Every knox token gets its ApiToken, however it was made (the API, Django admin's
    *Auth tokens* page, a script), so every token is listed to its owner."""
    if created and not raw:
        ApiToken.objects.get_or_create(token=instance,
                                       defaults={"last_used_at": instance.created})


_PASSWORD_CHANGED = "_api_tokens_revoke"


def _password_changed(user, update_fields) -> bool:
    """Whether this save replaces the stored password hash with a new password.

    Django upgrades a hash on login (a new hasher or more iterations) by saving only the
    password, usable before and after, with ``_password`` cleared: the same password, so
    that is no change. Any other new hash is: ``set_password()`` (the reset and change
    pages, Django admin, ``manage.py changepassword``), ``set_unusable_password()``, a hash
    assigned directly (unless saved like an upgrade)."""
    if user._state.adding or user.pk is None:
        return False
    if update_fields is not None and "password" not in update_fields:
        return False
    stored = (type(user)._base_manager.filter(pk=user.pk)
              .values_list("password", flat=True).first())
    if stored is None or stored == user.password:
        return False
    hash_upgrade = (getattr(user, "_password", None) is None
                    and update_fields is not None and set(update_fields) == {"password"}
                    and is_password_usable(stored) and is_password_usable(user.password))
    return not hash_upgrade


def note_password_change(sender, instance, raw: bool = False, update_fields=None, **kwargs):
    """pre_save of the user model: compare the hash being saved with the stored one."""
    setattr(instance, _PASSWORD_CHANGED, not raw and _password_changed(instance, update_fields))


def revoke_tokens_on_password_change(sender, instance, raw: bool = False, **kwargs):
    """post_save of the user model: a new password ends every API token of the account.
    Browser sessions follow Django's rule: the one that changed it stays signed in
    (``update_session_auth_hash``), every other one is signed out."""
    if getattr(instance, _PASSWORD_CHANGED, False):
        setattr(instance, _PASSWORD_CHANGED, False)
        api_token_revoke_all(user=instance, reason=RevokeReason.PASSWORD_CHANGED)


def connect_receivers() -> None:
    user_model = get_user_model()
    post_save.connect(api_token_record, sender=AuthToken, dispatch_uid="api_token_record")
    pre_save.connect(note_password_change, sender=user_model,
                     dispatch_uid="api_token_note_password_change")
    post_save.connect(revoke_tokens_on_password_change, sender=user_model,
                      dispatch_uid="api_token_revoke_on_password_change")
