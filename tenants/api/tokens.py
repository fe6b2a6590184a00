"""API tokens over the API: ``auth/token/`` logs in (and out), ``auth/tokens/`` lists the
caller's tokens and revokes any of them."""

from django.contrib.auth import authenticate
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.models import AuthToken
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.exceptions import NotAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.tokens import ApiToken, api_token_create, api_token_list, api_token_revoke
from core.api.filters import ListFilterSet
from core.api.idempotency import IdempotentMixin
from core.api.throttling import AnonRateThrottle, LoginRateThrottle
from core.errors import InvalidInput

from .authentication import TokenAuthentication


class ApiTokenScheme(KnoxTokenScheme):
    """The schema's ``Authorization: Token`` scheme, for our subclass of knox's class."""

    target_class = "tenants.api.authentication.TokenAuthentication"


class TokenCredentials(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                 help_text="A label for the token (default: API token).")


class TokenView(APIView):
    """POST: exchange a username and password for an API token (stored hashed, expiring).
    DELETE: revoke the token the request is made with."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [permissions.AllowAny]
    # Per client address, and per address and username (VDI_THROTTLE_ANON, _LOGIN).
    throttle_classes = [AnonRateThrottle, LoginRateThrottle]

    @extend_schema(
        request=TokenCredentials,
        responses={200: inline_serializer("Token", {
            "token": serializers.CharField(),
            "expiry": serializers.DateTimeField(allow_null=True),
            "id": serializers.UUIDField(help_text="The token's id in auth/tokens/."),
            "name": serializers.CharField(),
        })},
    )
    def post(self, request):
        credentials = TokenCredentials(data=request.data)
        credentials.is_valid(raise_exception=True)
        name = credentials.validated_data.pop("name", "")
        # Django's request, so the login lockout (config/security.py) can flag it for its answer.
        user = authenticate(request._request, **credentials.validated_data)
        if user is None or not user.is_active:
            raise InvalidInput("Unable to log in with these credentials.", code="invalid_credentials")
        info, token = api_token_create(user=user, name=name)
        return Response({"token": token, "expiry": info.token.expiry, "id": info.id,
                         "name": info.name}, status=status.HTTP_200_OK)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request):
        if not isinstance(request.auth, AuthToken):
            raise NotAuthenticated("Send the token to revoke in the Authorization header.")
        api_token_revoke(token=request.auth.info, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenSerializer(serializers.ModelSerializer):
    created_at = serializers.DateTimeField(read_only=True)
    expiry = serializers.DateTimeField(read_only=True, allow_null=True,
                                       help_text="When it stops working; null: never.")
    current = serializers.SerializerMethodField(
        help_text="Whether this is the token the request was made with.")

    class Meta:
        model = ApiToken
        fields = ["id", "name", "created_at", "last_used_at", "expiry", "current"]
        read_only_fields = fields

    def get_current(self, token) -> bool:
        auth = getattr(self.context.get("request"), "auth", None)
        return isinstance(auth, AuthToken) and auth.digest == token.token_id


class ApiTokenFilter(ListFilterSet):
    class Meta:
        model = ApiToken
        fields = []


class ApiTokenViewSet(IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your own API tokens (never their keys): when each was made and last used, when it
    expires, and which one this request uses. Revoking one ends it at once; changing your
    password revokes them all. Other people's tokens are 404."""

    serializer_class = ApiTokenSerializer
    filterset_class = ApiTokenFilter
    ordering_fields = ["created_at", "last_used_at", "name"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return api_token_list(user=self.request.user)

    @extend_schema(responses={204: OpenApiResponse(description="Revoked.")})
    def destroy(self, request, pk):
        api_token_revoke(token=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
