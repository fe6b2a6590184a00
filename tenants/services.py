"""Tenants, memberships and quotas."""

from __future__ import annotations

import logging
import re
import uuid
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from vdi.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded

from .audit import audit_record, audited
from .choices import ADMIN_ROLES, Role, TenantStatus
from .models import Membership, Tenant
from .scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)


def tenant_create(*, slug: str, name: str, owner=None, **quotas) -> Tenant:
    tenant = Tenant(slug=slug, name=name, **quotas)
    details = {"slug": slug, "owner": owner.get_username() if owner else None}
    # A refused one is a platform entry: the organisation it names does not exist.
    with audited(action="tenant.create", tenant=None, target=tenant, details=details) as audit:
        with transaction.atomic():
            tenant.full_clean()
            tenant.save()
            if owner is not None:
                membership_add(tenant=tenant, user=owner, role=Role.OWNER)
        audit.tenant = tenant
    return tenant


def membership_add(*, tenant: Tenant, user, role: str = Role.MEMBER) -> Membership:
    membership = Membership(tenant=tenant, user=user, role=role)
    with tenant_scope(tenant):
        membership.full_clean()
        membership.save()
    return membership


def tenant_lock(*, tenant: Tenant) -> Tenant:
    """Lock the tenant row for the rest of the transaction: quota checks then serialise."""
    return Tenant.objects.select_for_update().get(pk=tenant.pk)


def tenant_set_status(*, tenant: Tenant, status: str, actor) -> Tenant:
    """Suspend or resume an organisation. Suspended, it can neither connect nor provision,
    and its live sessions end at once (reason ``admin``); audited either way."""
    from brokers.choices import LIVE_SESSION_STATES
    from brokers.models import Session
    from brokers.services import session_end

    with audited(action=f"tenant.{status}", tenant=tenant, target=tenant,
                 actor=actor) as audit, transaction.atomic():
        tenant = tenant_lock(tenant=tenant)
        if tenant.status == status:
            audit.skip()
            return tenant
        previous, tenant.status = tenant.status, status
        tenant.save(update_fields=["status"])
        audit.details = {"from": previous, "to": status}
        with tenant_scope(tenant):
            if status == TenantStatus.SUSPENDED:
                for session in Session.objects.filter(state__in=LIVE_SESSION_STATES):
                    session_end(session=session, actor=actor, reason="admin")
    return tenant


def tenant_require_active(*, tenant: Tenant) -> None:
    if not tenant.is_active:
        raise Conflict("This organisation is suspended.", code="tenant_suspended")


def quota_check_desktops(*, tenant: Tenant, vcpus: int, memory_mb: int, count: int = 1) -> None:
    """Raise QuotaExceeded if ``count`` more desktops of this size would pass a quota.

    Call it inside a transaction after ``tenant_lock``.
    """
    from vdi.choices import DesktopState
    from vdi.models import Desktop

    if tenant.max_desktops is None and tenant.max_vcpus is None and tenant.max_memory_mb is None:
        return
    with scopes_disabled():
        usage = Desktop.objects.filter(tenant=tenant).exclude(
            state=DesktopState.DELETING
        ).aggregate(desktops=Count("id"), vcpus=Sum("vcpus"), memory=Sum("memory_mb"))
    checks = (
        ("max_desktops", tenant.max_desktops, usage["desktops"] + count),
        ("max_vcpus", tenant.max_vcpus, (usage["vcpus"] or 0) + vcpus * count),
        ("max_memory_mb", tenant.max_memory_mb, (usage["memory"] or 0) + memory_mb * count),
    )
    for quota, limit, wanted in checks:
        if limit is not None and wanted > limit:
            raise QuotaExceeded(
                f"The organisation's {quota} quota ({limit}) would be exceeded.",
                details={"quota": quota, "limit": limit, "requested": wanted},
            )


def quota_check_sessions(*, tenant: Tenant, live_sessions: int) -> None:
    if tenant.max_sessions is not None and live_sessions + 1 > tenant.max_sessions:
        raise QuotaExceeded(
            f"The organisation's max_sessions quota ({tenant.max_sessions}) is reached.",
            details={"quota": "max_sessions", "limit": tenant.max_sessions},
        )


# --- members: add, invite, change role, remove -------------------------------------------
# Each write runs in one transaction under ``tenant_lock``, so two admins changing the same
# organisation's members (e.g. two owners demoting each other) are serialised and the
# organisation always keeps an owner.

def _actor_role(*, tenant: Tenant, actor) -> str | None:
    """The actor's rights over the tenant's members: their role, ``owner`` for platform staff
    who are not members (they may act in any tenant), else None."""
    with tenant_scope(tenant):
        role = Membership.objects.filter(user=actor).values_list("role", flat=True).first()
    if role is None and getattr(actor, "is_staff", False):
        return Role.OWNER
    return role


def _require_member_admin(*, tenant: Tenant, actor, touches_owner: bool) -> None:
    role = _actor_role(tenant=tenant, actor=actor)
    if role not in ADMIN_ROLES:
        raise Forbidden("Only the organisation's owners and admins may manage its members.")
    if touches_owner and role != Role.OWNER:
        raise Forbidden("Only an owner may grant or change the owner role.")


def _validate_role(role) -> str:
    if role not in Role.values:
        raise InvalidInput("The request is not valid.", details={
            "role": [f"Choose one of: {', '.join(Role.values)}."]})
    return Role(role).value


def _owner_count(*, tenant: Tenant) -> int:
    with tenant_scope(tenant):
        return Membership.objects.filter(role=Role.OWNER).count()


def _membership_locked(*, membership: Membership) -> Membership:
    """Lock the tenant, then reload the membership (it may have gone meanwhile)."""
    tenant_lock(tenant=membership.tenant)
    with tenant_scope(membership.tenant):
        current = (Membership.objects.select_for_update().select_related("user", "tenant")
                   .filter(pk=membership.pk).first())
    if current is None:
        raise NotFound("No such member.")
    return current


def _username_candidates(email: str):
    """``jane.doe`` for ``Jane.Doe@example.com``, then ``jane.doe-2``, … and at last a random
    suffix: within the characters and length Django allows in a username."""
    local = email.rsplit("@", 1)[0].lower()
    base = re.sub(r"[^\w.+-]", "", local)[:140].strip(".") or "user"
    yield base
    for n in range(2, 100):
        yield f"{base}-{n}"
    while True:
        yield f"{base}-{uuid.uuid4().hex[:8]}"


def _user_create_invited(*, email: str):
    """A new account for ``email`` with no usable password (it is chosen through the e-mailed
    link) and a unique username derived from the address."""
    User = get_user_model()
    for username in _username_candidates(email):
        if User._default_manager.filter(username__iexact=username).exists():
            continue
        user = User(username=User.normalize_username(username), email=email)
        user.set_unusable_password()
        try:
            with transaction.atomic():  # a savepoint: a concurrent taker of the name → next
                user.save()
        except IntegrityError:
            continue
        return user
    raise AssertionError("unreachable")  # pragma: no cover


def _invitation_send(*, user, tenant: Tenant, actor, site_url: str) -> None:
    """E-mail ``user`` a one-time link to choose a password (Django's password-reset token:
    it stops working once the password is set, or after ``PASSWORD_RESET_TIMEOUT``).

    Sent once the transaction commits: a rolled-back invitation e-mails nobody. The link is
    never logged nor audited."""
    if not site_url:
        raise ValueError("site_url is needed to e-mail an invitation link")
    path = reverse("password_reset_confirm", kwargs={
        "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
        "token": default_token_generator.make_token(user),
    })
    context = {
        "user": user, "tenant": tenant, "inviter": actor,
        "link": urljoin(site_url, path), "login_url": urljoin(site_url, reverse("login")),
        "valid_days": max(1, settings.PASSWORD_RESET_TIMEOUT // 86400),
    }
    subject = " ".join(render_to_string("registration/member_invite_subject.txt",
                                        context).split())
    body = render_to_string("registration/member_invite_email.txt", context)

    def invitation_email_send():
        send_mail(subject, body, None, [user.email])

    # robust: a mail server failure after the commit is logged by Django; the membership
    # stands, and inviting the address again once it is removed sends a fresh link.
    transaction.on_commit(invitation_email_send, robust=True)
    logger.info("invitation for %s to tenant %s queued for e-mail", user.username, tenant.slug)


def membership_invite(*, tenant: Tenant, actor, role: str, username: str | None = None,
                      email: str | None = None, site_url: str | None = None) -> Membership:
    """Add a person to the organisation with ``role``: an existing, active user by
    ``username``, or anyone by ``email``.

    By e-mail: an active user with that address is added; otherwise an account is created
    (username derived from the address, no usable password) and a one-time set-password link
    under ``site_url`` (the portal's address as the request reached it) is e-mailed; a user
    who never set a password gets a fresh link. Only owners and admins may add people, only
    owners may make someone an owner; adding a member again is a 409 ``already_member``.
    """
    asked = {"username": username} if email is None else {"email": email}
    with audited(action="member.add" if email is None else "member.invite", tenant=tenant,
                 target=Membership, actor=actor, details={**asked, "role": role}) as audit:
        membership, audit.details = _membership_invite(
            tenant=tenant, actor=actor, role=role, username=username, email=email,
            site_url=site_url)
        audit.target = membership
    return membership


def _membership_invite(*, tenant, actor, role, username, email, site_url):
    """``membership_invite`` itself: the membership and what the audit entry tells."""
    role = _validate_role(role)
    if (username is None) == (email is None):
        raise InvalidInput("The request is not valid.", details={
            "non_field_errors": ["Give either a username or an e-mail address."]})
    User = get_user_model()
    if email is not None:
        email = User._default_manager.normalize_email(email.strip())
        try:
            validate_email(email)
        except ValidationError as error:
            raise InvalidInput("The request is not valid.",
                               details={"email": error.messages}) from None
    with transaction.atomic(), tenant_scope(tenant):
        tenant_lock(tenant=tenant)
        _require_member_admin(tenant=tenant, actor=actor, touches_owner=role == Role.OWNER)
        created = link_sent = False
        if username is not None:
            user = User._default_manager.filter(username=username, is_active=True).first()
            if user is None:
                raise InvalidInput("The request is not valid.",
                                   details={"username": ["No such user."]})
        else:
            matches = list(User._default_manager.filter(email__iexact=email, is_active=True)[:2])
            if len(matches) > 1:
                raise InvalidInput("The request is not valid.", details={"email": [
                    "Several accounts use this address: add the person by username."]})
            user = matches[0] if matches else None
            if user is None:
                user = _user_create_invited(email=email)
                created = True
        if Membership.objects.filter(user=user).exists():
            raise Conflict(f"{user.username} is already a member of this organisation.",
                           code="already_member")
        membership = membership_add(tenant=tenant, user=user, role=role)
        if email is not None and not user.has_usable_password():
            _invitation_send(user=user, tenant=tenant, actor=actor, site_url=site_url)
            link_sent = True
    details = {"username": user.username, "role": role}
    if email is not None:
        details.update(email=email, account_created=created, link_sent=link_sent)
    return membership, details


def membership_update_role(*, membership: Membership, actor, role: str) -> Membership:
    """Change a member's role. Only owners grant or take away the owner role; the last owner
    can't be demoted (409 ``last_owner``). Setting the role it has already changes nothing."""
    tenant = membership.tenant
    details = {"username": membership.user.username, "from": membership.role, "to": role}
    with audited(action="member.role", tenant=tenant, target=membership, actor=actor,
                 details=details) as audit, transaction.atomic(), tenant_scope(tenant):
        role = _validate_role(role)
        membership = _membership_locked(membership=membership)
        previous = audit.details["from"] = membership.role
        _require_member_admin(tenant=tenant, actor=actor,
                              touches_owner=Role.OWNER in (previous, role))
        if role == previous:
            audit.skip()
            return membership
        if previous == Role.OWNER and _owner_count(tenant=tenant) <= 1:
            raise Conflict("The organisation's last owner can't be demoted: make someone "
                           "else an owner first.", code="last_owner")
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def membership_remove(*, membership: Membership, actor) -> None:
    """Take a person out of the organisation (their account stays). Only owners remove
    owners; the last owner can't be removed (409 ``last_owner``)."""
    tenant = membership.tenant
    details = {"username": membership.user.username, "role": membership.role}
    with audited(action="member.remove", tenant=tenant, target=membership, actor=actor,
                 details=details), transaction.atomic(), tenant_scope(tenant):
        membership = _membership_locked(membership=membership)
        _require_member_admin(tenant=tenant, actor=actor,
                              touches_owner=membership.role == Role.OWNER)
        if membership.role == Role.OWNER and _owner_count(tenant=tenant) <= 1:
            raise Conflict("The organisation's last owner can't be removed: make someone "
                           "else an owner first.", code="last_owner")
        membership.delete()


# --- API tokens ------------------------------------------------------------------------------
def api_token_create(*, user):
    """A new API token for ``user``: (its row, the token, shown once). A platform audit
    entry records that one was issued; the token itself is stored hashed, never recorded."""
    from knox.models import AuthToken

    instance, token = AuthToken.objects.create(user)
    audit_record(tenant=None, actor=user, action="token.create", target=user,
                 details={"expiry": instance.expiry})
    return instance, token


def api_token_revoke(*, instance) -> None:
    user = instance.user
    instance.delete()
    audit_record(tenant=None, actor=user, action="token.revoke", target=user)
