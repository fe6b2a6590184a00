from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.auth import TokenAuthentication
from knox.models import AuthToken
from rest_framework.exceptions import NotAuthenticated
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.models import Membership, Tenant
from tenants.resolution import resolve_tenant
from tenants.selectors import membership_list, tenant_list_for_user
from tenants.services import (
    api_token_create,
    api_token_revoke,
    membership_invite,
    membership_remove,
    membership_update_role,
    tenant_create,
)
from vdi.api.idempotency import IdempotentMixin
from vdi.api.throttling import AnonRateThrottle, LoginRateThrottle, TenantThrottleMixin
from vdi.errors import Forbidden, InvalidInput

from .base import ScopedQuerysetMixin, TenantScopedMixin
from .filters import MembershipFilter, TenantFilter
from .serializers import (
    MembershipCreateSerializer,
    MembershipRoleSerializer,
    MembershipSerializer,
    TenantSerializer,
)


class TenantViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    viewsets.GenericViewSet):
    """Organisations: staff create them; members list and read their own."""

    serializer_class = TenantSerializer
    lookup_field = "slug"
    filterset_class = TenantFilter
    ordering_fields = ["slug", "name", "status", "created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Tenant.objects.none()
        return tenant_list_for_user(user=self.request.user)

    def get_object(self):
        access = resolve_tenant(user=self.request.user, slug=self.kwargs["slug"])
        return access.tenant

    def perform_create(self, serializer):
        if not self.request.user.is_staff:
            raise Forbidden("Only platform staff may create organisations.")
        serializer.instance = tenant_create(**serializer.validated_data)


LAST_OWNER = OpenApiResponse(description="``last_owner``: the organisation's last owner can't be "
                                        "demoted or removed.")


class MembershipViewSet(IdempotentMixin, TenantThrottleMixin, TenantScopedMixin,
                        ScopedQuerysetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """The organisation's members. Every member may list them; owners and admins add an
    existing user (``{username, role}``), invite by e-mail (``{email, role}``), change roles
    and remove people (the account stays). Only owners grant or change the owner role, and
    the last owner stays."""

    model = Membership
    serializer_class = MembershipSerializer
    filterset_class = MembershipFilter
    ordering_fields = ["created_at", "role"]

    def scoped_queryset(self):
        return membership_list(tenant=self.tenant)

    @extend_schema(request=MembershipCreateSerializer, responses={
        201: MembershipSerializer,
        409: OpenApiResponse(description="``already_member``: the person is already a member."),
    })
    def create(self, request, tenant_slug):
        body = MembershipCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = membership_invite(
            tenant=self.tenant, actor=request.user, site_url=request.build_absolute_uri("/"),
            **body.validated_data,
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

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


class TokenCredentials(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class TokenView(APIView):
    """POST: exchange a username and password for an API token (stored hashed, expiring).
    DELETE: revoke the token the request is made with."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [permissions.AllowAny]
    # Per client address, and per address and username (VDI_THROTTLE_ANON, _LOGIN).
    throttle_classes = [AnonRateThrottle, LoginRateThrottle]

    @extend_schema(
        request=TokenCredentials,
        responses={200: inline_serializer("Token", {"token": serializers.CharField(),
                                                    "expiry": serializers.DateTimeField(allow_null=True)})},
    )
    def post(self, request):
        credentials = TokenCredentials(data=request.data)
        credentials.is_valid(raise_exception=True)
        # Django's request, so the login lockout (vdi/security.py) can flag it for its answer.
        user = authenticate(request._request, **credentials.validated_data)
        if user is None or not user.is_active:
            raise InvalidInput("Unable to log in with these credentials.", code="invalid_credentials")
        instance, token = api_token_create(user=user)
        return Response({"token": token, "expiry": instance.expiry}, status=status.HTTP_200_OK)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request):
        if not isinstance(request.auth, AuthToken):
            raise NotAuthenticated("Send the token to revoke in the Authorization header.")
        api_token_revoke(instance=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)
