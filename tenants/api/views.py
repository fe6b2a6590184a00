from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from knox.models import AuthToken
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.models import Tenant
from tenants.resolution import resolve_tenant
from tenants.selectors import tenant_list_for_user
from tenants.services import tenant_create
from vdi.api.idempotency import IdempotentMixin
from vdi.errors import Forbidden, InvalidInput

from .serializers import TenantSerializer


class TenantViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    viewsets.GenericViewSet):
    """Organisations: staff create them; members list and read their own."""

    serializer_class = TenantSerializer
    lookup_field = "slug"
    filterset_fields = ["status"]

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


class TokenCredentials(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class TokenView(APIView):
    """Exchange a username and password for an API token (stored hashed, expiring)."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        request=TokenCredentials,
        responses={200: inline_serializer("Token", {"token": serializers.CharField(),
                                                    "expiry": serializers.DateTimeField(allow_null=True)})},
    )
    def post(self, request):
        credentials = TokenCredentials(data=request.data)
        credentials.is_valid(raise_exception=True)
        user = authenticate(request, **credentials.validated_data)
        if user is None or not user.is_active:
            raise InvalidInput("Unable to log in with these credentials.", code="invalid_credentials")
        instance, token = AuthToken.objects.create(user)
        return Response({"token": token, "expiry": instance.expiry}, status=status.HTTP_200_OK)
