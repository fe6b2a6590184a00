from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from tenants.choices import TenantStatus
from tenants.models import Invitation, Membership, Tenant
from tenants.resolution import resolve_tenant
from tenants.selectors import membership_list, tenant_list_for_user
from tenants.scoping import scopes_disabled
from tenants.members import (
    invitation_accept,
    invitation_decline,
    invitation_revoke,
    membership_invite,
    membership_remove,
    membership_update_role,
)
from tenants.services import tenant_create, tenant_set_status, tenant_update
from core.api.idempotency import IdempotentMixin
from core.api.throttling import TenantThrottleMixin
from core.errors import Forbidden

from .base import ScopedQuerysetMixin, TenantScopedMixin
from .filters import InvitationFilter, MembershipFilter, MyInvitationFilter, TenantFilter
from .serializers import (
    InvitationSerializer,
    MembershipCreateSerializer,
    MembershipRoleSerializer,
    MembershipSerializer,
    MyInvitationSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
)


STAFF_ONLY = OpenApiResponse(description="``permission_denied``: platform staff only.")


class TenantViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                    mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Organisations: staff create, change, suspend and resume them; members list and read
    their own, and owners rename theirs."""

    model = Tenant
    serializer_class = TenantSerializer
    lookup_field = "slug"
    filterset_class = TenantFilter
    ordering_fields = ["slug", "name", "status", "created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Tenant.objects.none()
        return tenant_list_for_user(user=self.request.user)

    def get_object(self):
        # Kept on the view: a refusal is then audited in the organisation's trail.
        self.access = resolve_tenant(user=self.request.user, slug=self.kwargs["slug"])
        return self.access.tenant

    def perform_create(self, serializer):
        if not self.request.user.is_staff:
            raise Forbidden("Only platform staff may create organisations.")
        serializer.instance = tenant_create(**serializer.validated_data)

    @extend_schema(request=TenantUpdateSerializer, responses={
        200: TenantSerializer,
        403: OpenApiResponse(description="``permission_denied``: owners change only the "
                                         "name; admins and members nothing."),
    })
    def partial_update(self, request, slug):
        tenant = self.get_object()
        body = TenantUpdateSerializer(tenant, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        tenant = tenant_update(tenant=tenant, actor=request.user, **body.validated_data)
        return Response(TenantSerializer(tenant).data)

    def _set_status(self, status: str):
        tenant = self.get_object()
        if not self.request.user.is_staff:
            raise Forbidden("Only platform staff may suspend or resume organisations.")
        tenant = tenant_set_status(tenant=tenant, status=status, actor=self.request.user)
        return Response(TenantSerializer(tenant).data)

    @extend_schema(request=None, responses={200: TenantSerializer, 403: STAFF_ONLY})
    @action(detail=True, methods=["post"])
    def suspend(self, request, slug):
        """Suspend: no more connects or provisioning, and every live session ends at once
        (audited; suspending a suspended organisation changes nothing)."""
        return self._set_status(TenantStatus.SUSPENDED)

    @extend_schema(request=None, responses={200: TenantSerializer, 403: STAFF_ONLY})
    @action(detail=True, methods=["post"])
    def resume(self, request, slug):
        """Make a suspended organisation active again (audited)."""
        return self._set_status(TenantStatus.ACTIVE)


LAST_OWNER = OpenApiResponse(description="``last_owner``: the organisation's last owner can't be "
                                        "demoted or removed.")


class MembershipViewSet(IdempotentMixin, TenantThrottleMixin, TenantScopedMixin,
                        ScopedQuerysetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """The organisation's members. Every member may list them; owners and admins invite
    people by username (``{username, role}``) or e-mail (``{email, role}``), who become
    members once they accept, change roles and remove people (the account stays; their
    sessions end). Only owners grant or change the owner role, and the last owner stays."""

    model = Membership
    serializer_class = MembershipSerializer
    filterset_class = MembershipFilter
    ordering_fields = ["created_at", "role"]

    def scoped_queryset(self):
        return membership_list(tenant=self.tenant)

    @extend_schema(request=MembershipCreateSerializer, responses={
        202: OpenApiResponse(InvitationSerializer, description="Invited: the person becomes "
                             "a member once they accept. The same answer whether or not an "
                             "account has that username or address."),
        409: OpenApiResponse(description="``already_member``: the person is already a member."),
    })
    def create(self, request, tenant_slug):
        body = MembershipCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invitation = membership_invite(
            tenant=self.tenant, actor=request.user, site_url=request.build_absolute_uri("/"),
            **body.validated_data,
        )
        return Response(InvitationSerializer(invitation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=MembershipRoleSerializer,
                   responses={200: MembershipSerializer, 409: LAST_OWNER})
    def partial_update(self, request, tenant_slug, pk):
        body = MembershipRoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = membership_update_role(membership=self.get_object(), actor=request.user,
                                            **body.validated_data)
        return Response(MembershipSerializer(membership).data)

    @extend_schema(responses={204: None, 409: LAST_OWNER})
    def destroy(self, request, tenant_slug, pk):
        membership_remove(membership=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


INVITATION_CLOSED = OpenApiResponse(description="``invitation_closed`` (accepted, declined or "
                                                "revoked already), ``invitation_expired``.")


class TenantInvitationViewSet(IdempotentMixin, TenantThrottleMixin, TenantScopedMixin,
                              ScopedQuerysetMixin, mixins.ListModelMixin,
                              mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The organisation's invitations (owners and admins): whom they invited, as they gave
    it, and what became of it. DELETE revokes a pending one (only owners one for the owner
    role); it stays listed as ``revoked``."""

    model = Invitation
    serializer_class = InvitationSerializer
    filterset_class = InvitationFilter
    ordering_fields = ["created_at", "expires_at", "role"]
    admin_actions = frozenset({"list", "retrieve", "destroy"})

    def scoped_queryset(self):
        return Invitation.objects.select_related("inviter")

    @extend_schema(responses={204: None, 409: INVITATION_CLOSED})
    def destroy(self, request, tenant_slug, pk):
        invitation_revoke(invitation=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """Your invitations to organisations (``?state=pending`` for the ones still open):
    accept one to become a member, or decline it."""

    model = Invitation
    serializer_class = MyInvitationSerializer
    filterset_class = MyInvitationFilter
    ordering_fields = ["created_at", "expires_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Invitation._base_manager.none()
        with scopes_disabled():  # they are not in these organisations (yet)
            return (Invitation.objects.addressed_to(self.request.user)
                    .select_related("tenant", "inviter"))

    @extend_schema(request=None, responses={200: MyInvitationSerializer, 409: OpenApiResponse(
        description="``invitation_closed``, ``invitation_expired``, ``already_member``.")})
    @action(detail=True, methods=["post"])
    def accept(self, request, pk):
        """Join the organisation with the invitation's role."""
        invitation = self.get_object()
        invitation_accept(invitation=invitation, user=request.user)
        invitation.refresh_from_db()
        return Response(MyInvitationSerializer(invitation).data)

    @extend_schema(request=None, responses={200: MyInvitationSerializer, 409: INVITATION_CLOSED})
    @action(detail=True, methods=["post"])
    def decline(self, request, pk):
        """Say no: the invitation closes."""
        invitation = invitation_decline(invitation=self.get_object(), user=request.user)
        return Response(MyInvitationSerializer(invitation).data)
