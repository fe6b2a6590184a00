"""Members: invitations (the only way in), roles and removal."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from datetime import timedelta
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from core.errors import Conflict, Forbidden, InvalidInput, NotFound

from .audit import audit_record, audited
from .choices import ADMIN_ROLES, AuditResult, Role
from .events import membership_removed
from .models import Invitation, InvitationState, Membership, Tenant
from .scoping import tenant_scope
from .services import actor_role, membership_add, tenant_lock

logger = logging.getLogger(__name__)


# --- members: invite, change role, remove -------------------------------------------------
# Each write runs in one transaction under ``tenant_lock``, so two admins changing the same
# organisation's members (e.g. two owners demoting each other) are serialised and the
# organisation always keeps an owner.

def _require_member_admin(*, tenant: Tenant, actor, touches_owner: bool) -> None:
    role = actor_role(tenant=tenant, actor=actor)
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


# --- invitations: the only way in for someone else's account ------------------------------
# An invitation by username or e-mail looks the same to the inviter whether or not an account
# has that name or address: the answer, the invitation they see and the organisation's audit
# entry never tell. Whom it reached is written on the platform's trail (``invitation.deliver``,
# no tenant: staff only). The invited person consents by accepting; only then do they appear
# among the members.

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_token_matches(*, invitation: Invitation, token: str | None) -> bool:
    """Whether ``token`` is the one of the invitation's latest e-mailed link."""
    return bool(token) and hmac.compare_digest(_token_hash(token), invitation.token_hash)


def invitation_sets_password(*, invitation: Invitation) -> bool:
    """Whether the e-mailed link also chooses the account's first password: only for an
    account nobody has used yet (made by an invitation), never for one that signs in
    otherwise (single sign-on)."""
    user = invitation.user
    return user is not None and not user.has_usable_password() and user.last_login is None


def _invitation_issue(*, invitation: Invitation) -> str:
    """A new token (the previous link stops working) and expiry for ``invitation``."""
    token = secrets.token_urlsafe(32)
    invitation.token_hash = _token_hash(token)
    invitation.expires_at = timezone.now() + timedelta(hours=settings.VDI["INVITATION_TTL_H"])
    return token


def _valid_for() -> str:
    hours = settings.VDI["INVITATION_TTL_H"]
    if hours % 24 == 0:
        return f"{hours // 24} day{'s' if hours > 24 else ''}"
    return f"{hours} hour{'s' if hours > 1 else ''}"


def _invitation_email(*, invitation: Invitation, token: str, to: str, site_url: str) -> None:
    """E-mail the invitation's one-time link to ``to`` once the transaction commits: a
    rolled-back invitation e-mails nobody. The link is never logged nor audited."""
    if not site_url:
        raise ValueError("site_url is needed to e-mail an invitation link")
    path = reverse("invitation-link", kwargs={"pk": invitation.pk, "token": token})
    context = {
        "invitation": invitation, "tenant": invitation.tenant, "inviter": invitation.inviter,
        "user": invitation.user, "sets_password": invitation_sets_password(invitation=invitation),
        "link": urljoin(site_url, path), "login_url": urljoin(site_url, reverse("login")),
        "valid_for": _valid_for(),
    }
    subject = " ".join(render_to_string("registration/member_invite_subject.txt",
                                        context).split())
    body = render_to_string("registration/member_invite_email.txt", context)

    def invitation_email_send():
        send_mail(subject, body, None, [to])

    # robust: a mail server failure after the commit is logged by Django; the invitation
    # stands, its invitee finds it in the portal, and inviting again sends a fresh link.
    transaction.on_commit(invitation_email_send, robust=True)
    logger.info("invitation %s to tenant %s queued for e-mail", invitation.pk,
                invitation.tenant.slug)


def membership_invite(*, tenant: Tenant, actor, role: str, username: str | None = None,
                      email: str | None = None, site_url: str | None = None) -> Invitation:
    """Invite a person to join the organisation with ``role``, by ``username`` or by
    ``email``; they become a member when they accept (``invitation_accept``).

    By username: the active account with it gets the invitation (in the portal and the API,
    and by e-mail at its address, if it has one). With no such account the invitation is
    recorded all the same, but nobody can ever accept it and nothing else happens (no
    account, no e-mail). By e-mail: the link goes to the address; the account with it gets
    the invitation, several accounts with it may each take it up, and a new address gets an
    account with no usable password, whose password the link then chooses (under
    ``site_url``, the portal's address as the request reached it).

    Inviting someone whose invitation is still pending renews it (new link, expiry, role and
    inviter). Only owners and admins invite, only owners invite owners; a current member is
    a 409 ``already_member`` (the member list shows them anyway).
    """
    with audited(action="member.invite", tenant=tenant, target=Invitation, actor=actor,
                 details={**_addressee(username, email), "role": role}) as audit:
        invitation, renewed = _membership_invite(
            tenant=tenant, actor=actor, role=role, username=username, email=email,
            site_url=site_url)
        audit.target = invitation
        audit.details = {**_addressee(invitation.username or None, invitation.email or None),
                         "role": invitation.role, "renewed": renewed}
    return invitation


def _addressee(username, email) -> dict:
    return {"username": username} if email is None else {"email": email}


def _membership_invite(*, tenant, actor, role, username, email, site_url):
    """``membership_invite`` itself: the invitation, and whether it was renewed."""
    role = _validate_role(role)
    if (username is None) == (email is None):
        raise InvalidInput("The request is not valid.", details={
            "non_field_errors": ["Give either a username or an e-mail address."]})
    if username is not None and not 0 < len(username) <= 150:
        raise InvalidInput("The request is not valid.", details={
            "username": ["Give a username of 1 to 150 characters."]})
    User = get_user_model()
    if email is not None:
        email = User._default_manager.normalize_email(email.strip())
        try:
            validate_email(email)
        except ValidationError as error:
            raise InvalidInput("The request is not valid.",
                               details={"email": error.messages}) from None
        accounts = User._default_manager.filter(email__iexact=email, is_active=True)
    else:
        accounts = User._default_manager.filter(username=username, is_active=True)
    with transaction.atomic(), tenant_scope(tenant):
        tenant_lock(tenant=tenant)
        _require_member_admin(tenant=tenant, actor=actor, touches_owner=role == Role.OWNER)
        if Membership.objects.filter(user__in=accounts).exists():
            raise Conflict(f"{username or email} is already a member of this organisation.",
                           code="already_member")
        matches = list(accounts[:2])
        found = "several" if len(matches) > 1 else "existing" if matches else "none"
        if email is not None and not matches:
            matches, found = [_user_create_invited(email=email)], "created"
        user = matches[0] if len(matches) == 1 else None
        invitation = _invitation_pending(user=user, username=username, email=email)
        renewed = invitation is not None
        if invitation is None:
            invitation = Invitation(tenant=tenant, user=user)
        invitation.username, invitation.email = username or "", email or ""
        invitation.role = role
        invitation.inviter = actor if getattr(actor, "is_authenticated", False) else None
        token = _invitation_issue(invitation=invitation)
        invitation.full_clean()
        invitation.save()
        _invitation_deliver(invitation=invitation, token=token, found=found, site_url=site_url)
    return invitation, renewed


def _invitation_pending(*, user, username, email) -> Invitation | None:
    """The pending invitation (expired or not) that a new one for the same person renews."""
    pending = Invitation.objects.select_for_update().filter(state=InvitationState.PENDING)
    if user is not None:
        pending = pending.filter(user=user)
    elif email is None:
        pending = pending.filter(user__isnull=True, username=username, email="")
    else:
        pending = pending.filter(user__isnull=True, email__iexact=email)
    return pending.first()


def _invitation_deliver(*, invitation: Invitation, token: str, found: str, site_url) -> None:
    """Send the invitation to whom it names, and tell the platform's trail whom that was
    (``found``: an ``existing`` account, one ``created`` for a new address, ``several`` with
    the address, or ``none``). Never the tenant's trail: its admins would learn whether an
    account has that username, and which address it has."""
    tenant = invitation.tenant
    if found == "none":
        audit_record(tenant=None, action="invitation.deliver", target=invitation,
                     actor=invitation.inviter, result=AuditResult.REJECTED, details={
                         "tenant": tenant.slug, "username": invitation.username,
                         "account": found, "error": {
                             "code": "no_such_user",
                             "message": "No active account has this username: nobody can "
                                        "accept this invitation."}})
        return
    to = invitation.email or invitation.user.email
    if to:
        _invitation_email(invitation=invitation, token=token, to=to, site_url=site_url)
    audit_record(tenant=None, action="invitation.deliver", target=invitation,
                 actor=invitation.inviter, details={
                     "tenant": tenant.slug, "account": found, "emailed": bool(to),
                     **({"username": invitation.user.username} if invitation.user else {})})


def _invitation_locked(*, invitation: Invitation) -> Invitation:
    """Lock the tenant, then reload the invitation (it may have changed meanwhile)."""
    tenant_lock(tenant=invitation.tenant)
    current = (Invitation.objects.select_for_update(of=("self",))
               .select_related("tenant", "user", "inviter").filter(pk=invitation.pk).first())
    if current is None:
        raise NotFound("No such invitation.")
    return current


def _invitation_respond_check(*, invitation: Invitation, user) -> None:
    """Only the invited person sees the invitation (anyone else: 404, as if there were
    none); it must be open."""
    if not invitation.is_for(user):
        raise NotFound("No such invitation.")
    if invitation.state != InvitationState.PENDING:
        raise Conflict(f"This invitation was {invitation.state} already.",
                       code="invitation_closed", details={"state": invitation.state})
    if not invitation.is_open:
        raise Conflict("This invitation has expired: ask for a new one.",
                       code="invitation_expired")


def invitation_accept(*, invitation: Invitation, user, token: str | None = None,
                      password: str | None = None) -> Membership:
    """``user``, the person invited, joins the organisation with the invitation's role.

    With ``password``: the e-mailed link of an account nobody has used yet sets its first
    password in the same transaction; the link's ``token`` must match. Refused: someone else
    (404), an invitation accepted, declined or revoked (409 ``invitation_closed``) or expired
    (409 ``invitation_expired``), a member already (409 ``already_member``)."""
    tenant = invitation.tenant
    with audited(action="invitation.accept", tenant=tenant, target=invitation, actor=user,
                 details={"role": invitation.role}) as audit, \
            transaction.atomic(), tenant_scope(tenant):
        invitation = _invitation_locked(invitation=invitation)
        _invitation_respond_check(invitation=invitation, user=user)
        if password is not None:
            if not (invitation_sets_password(invitation=invitation)
                    and invitation_token_matches(invitation=invitation, token=token)):
                raise Forbidden("This invitation's link does not choose a password.")
            user.set_password(password)
            user.save(update_fields=["password"])
        if Membership.objects.filter(user=user).exists():
            raise Conflict(f"{user.username} is already a member of this organisation.",
                           code="already_member")
        membership = membership_add(tenant=tenant, user=user, role=invitation.role)
        invitation.user, invitation.state = user, InvitationState.ACCEPTED
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["user", "state", "accepted_at"])
        audit.details = {"username": user.username, "role": invitation.role,
                         "membership": str(membership.pk), "password_set": password is not None}
    return membership


def invitation_decline(*, invitation: Invitation, user) -> Invitation:
    """The person invited says no: the invitation closes (409 as for ``invitation_accept``)."""
    tenant = invitation.tenant
    with audited(action="invitation.decline", tenant=tenant, target=invitation, actor=user,
                 details={"role": invitation.role}) as audit, \
            transaction.atomic(), tenant_scope(tenant):
        invitation = _invitation_locked(invitation=invitation)
        _invitation_respond_check(invitation=invitation, user=user)
        invitation.state = InvitationState.DECLINED
        invitation.save(update_fields=["state"])
        audit.details = {"username": user.username, "role": invitation.role}
    return invitation


def invitation_revoke(*, invitation: Invitation, actor) -> Invitation:
    """The organisation withdraws a pending invitation (expired or not): its link stops
    working and nobody can accept it. Owners and admins; only owners for the owner role;
    one no longer pending is a 409 ``invitation_closed``."""
    tenant = invitation.tenant
    with audited(action="invitation.revoke", tenant=tenant, target=invitation, actor=actor,
                 details={**_addressee(invitation.username or None, invitation.email or None),
                          "role": invitation.role}), transaction.atomic(), tenant_scope(tenant):
        invitation = _invitation_locked(invitation=invitation)
        _require_member_admin(tenant=tenant, actor=actor,
                              touches_owner=invitation.role == Role.OWNER)
        if invitation.state != InvitationState.PENDING:
            raise Conflict(f"This invitation was {invitation.state} already.",
                           code="invitation_closed", details={"state": invitation.state})
        invitation.state = InvitationState.REVOKED
        invitation.save(update_fields=["state"])
    return invitation


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
    """Take a person out of the organisation (their account stays) and end their access:
    ``membership_removed`` is sent in the transaction. Only owners remove owners; the last
    owner can't be removed (409 ``last_owner``)."""
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
        # Their access ends with the membership: the broker ends their sessions.
        membership_removed.send(sender=Membership, tenant=tenant, user=membership.user,
                                actor=actor)
