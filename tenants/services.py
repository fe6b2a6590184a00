"""Tenants, memberships and quotas."""

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
from django.db.models import Count, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from vdi.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded

from .audit import audit_record, audited
from .choices import ADMIN_ROLES, AuditResult, Role, TenantStatus
from .events import membership_removed, tenant_suspended
from .models import Invitation, InvitationState, Membership, Tenant
from .scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)


def tenant_create(*, slug: str, name: str, owner=None, **quotas) -> Tenant:
    """A new organisation. A quota not given is the platform's default
    (``VDI["DEFAULT_TENANT_QUOTAS"]``, the model's field default); one given as None is
    unlimited."""
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
    and nobody in it keeps access: ``tenant_suspended`` is sent in the transaction, and the
    broker ends every live session (reason ``admin``). Audited; the status it already has
    changes nothing."""
    if status not in TenantStatus.values:
        raise InvalidInput("The request is not valid.", details={
            "status": [f"Choose one of: {', '.join(TenantStatus.values)}."]})
    with audited(action=f"tenant.{status}", tenant=tenant, target=tenant,
                 actor=actor) as audit, transaction.atomic():
        tenant = tenant_lock(tenant=tenant)
        if tenant.status == status:
            audit.skip()
            return tenant
        previous, tenant.status = tenant.status, status
        tenant.save(update_fields=["status"])
        audit.details = {"from": previous, "to": status}
        if status == TenantStatus.SUSPENDED:
            tenant_suspended.send(sender=Tenant, tenant=tenant, actor=actor)
    return tenant


TENANT_QUOTAS = ("max_desktops", "max_vcpus", "max_memory_mb", "max_sessions")
# What an organisation's own owners may change; platform staff change all of these.
TENANT_OWNER_FIELDS = frozenset({"name"})
TENANT_STAFF_FIELDS = frozenset({"name", "status", *TENANT_QUOTAS})


def tenant_update(*, tenant: Tenant, actor, **changes) -> Tenant:
    """Change an organisation: platform staff its name, quotas (None: unlimited) and
    status, its owners only its name (anything else is 403). Every value is checked before
    anything changes. A status change is ``tenant_set_status``'s, with its effects and its
    own entry; the rest is one ``tenant.update`` entry with each field's old and new value
    (none when nothing changed)."""
    with audited(action="tenant.update", tenant=tenant, target=tenant, actor=actor,
                 details={"fields": sorted(changes)}) as audit, transaction.atomic():
        unknown = sorted(set(changes) - TENANT_STAFF_FIELDS)
        if unknown:
            raise InvalidInput("The request is not valid.", details={
                name: ["This field can't be changed."] for name in unknown})
        if not getattr(actor, "is_staff", False):
            if _actor_role(tenant=tenant, actor=actor) != Role.OWNER:
                raise Forbidden("Only the organisation's owners (and platform staff) may "
                                "change it.")
            if set(changes) - TENANT_OWNER_FIELDS:
                raise Forbidden("An owner may change the organisation's name; its quotas "
                                "and status are set by platform staff.")
        tenant = tenant_lock(tenant=tenant)
        status = changes.pop("status", tenant.status)
        changed = {name: [getattr(tenant, name), value] for name, value in changes.items()
                   if getattr(tenant, name) != value}
        previous_status = tenant.status
        for name, value in {**changes, "status": status}.items():
            setattr(tenant, name, value)
        tenant.full_clean()
        tenant.status = previous_status  # tenant_set_status changes it, with its effects
        if changed:
            tenant.save(update_fields=list(changed))
        audit.details = {"changed": changed}
        if not changed:
            audit.skip()
        if status != previous_status:
            tenant = tenant_set_status(tenant=tenant, status=status, actor=actor)
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


# --- members: invite, change role, remove -------------------------------------------------
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
