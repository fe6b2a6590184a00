from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from tenants.api.base import IsStaff, ScopedQuerysetMixin, TenantScopedMixin
from core.api.idempotency import IdempotentMixin
from core.api.throttling import TenantThrottleMixin
from tenants.scoping import scopes_disabled
from vdi.choices import OperationKind
from vdi.models import Desktop, Image, Operation, Pool
from vdi.selectors import desktop_list_for_user, operation_list_for_user, pool_list_for_user
from vdi.services import (
    desktop_power,
    image_delete,
    image_publish,
    image_save,
    pool_create,
    pool_delete,
    pool_update,
)

from .filters import DesktopFilter, ImageFilter, OperationFilter, PoolFilter
from .serializers import (
    DesktopSerializer,
    ImagePublishSerializer,
    ImageSerializer,
    OperationSerializer,
    PoolSerializer,
)


# The pools and desktops a tenant's API views see, with their filters and ordering: the
# viewsets here and the brokers app's (connect, takeover) look them up alike. No docstrings:
# the schema describes an operation by the first docstring among its view's classes.
class PoolLookupMixin:
    model = Pool
    serializer_class = PoolSerializer
    filterset_class = PoolFilter
    ordering_fields = ["name", "created_at"]

    def scoped_queryset(self):
        return pool_list_for_user(user=self.request.user, is_admin=self.is_admin)


class DesktopLookupMixin:
    model = Desktop
    serializer_class = DesktopSerializer
    filterset_class = DesktopFilter
    ordering_fields = ["name", "created_at", "state", "state_changed_at"]

    def scoped_queryset(self):
        return desktop_list_for_user(user=self.request.user, is_admin=self.is_admin)


class PoolViewSet(PoolLookupMixin, IdempotentMixin, TenantThrottleMixin, TenantScopedMixin,
                  ScopedQuerysetMixin, viewsets.ModelViewSet):
    """Desktop pools. Deleting one answers 202: it is disabled at once, its sessions end and
    its desktops are deleted in the background (``deleting_since`` is set meanwhile)."""

    # The answer is read back through the list's query: it carries the counts and the
    # provisioning state the service's own row does not.
    def perform_create(self, serializer):
        pool = pool_create(tenant=self.tenant, actor=self.request.user,
                           **serializer.validated_data)
        serializer.instance = self.scoped_queryset().get(pk=pool.pk)

    def perform_update(self, serializer):
        pool = pool_update(pool=serializer.instance, actor=self.request.user,
                           **serializer.validated_data)
        serializer.instance = self.scoped_queryset().get(pk=pool.pk)

    @extend_schema(responses={202: PoolSerializer})
    def destroy(self, request, *args, **kwargs):
        pool = pool_delete(pool=self.get_object(), actor=request.user)
        return Response(self.get_serializer(pool).data, status=status.HTTP_202_ACCEPTED)


def _power_action(kind: str):
    def run(self, request, tenant_slug, pk):
        operation = desktop_power(desktop=self.get_object(), kind=kind, actor=request.user)
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)

    run.__name__ = kind
    # extend_schema goes on top of action(): the other way round its override is lost.
    return extend_schema(request=None, responses={202: OperationSerializer})(
        action(detail=True, methods=["post"])(run))


class DesktopViewSet(DesktopLookupMixin, IdempotentMixin, TenantThrottleMixin, TenantScopedMixin,
                     ScopedQuerysetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     viewsets.GenericViewSet):
    start = _power_action(OperationKind.START)
    shutdown = _power_action(OperationKind.SHUTDOWN)
    poweroff = _power_action(OperationKind.POWEROFF)
    reboot = _power_action(OperationKind.REBOOT)
    reset = _power_action(OperationKind.RESET)


class OperationViewSet(TenantThrottleMixin, TenantScopedMixin, ScopedQuerysetMixin,
                       mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    model = Operation
    serializer_class = OperationSerializer
    filterset_class = OperationFilter
    ordering_fields = ["created_at", "started_at", "finished_at", "state", "kind"]

    def scoped_queryset(self):
        return operation_list_for_user(user=self.request.user, is_admin=self.is_admin)


class ImageViewSet(IdempotentMixin, viewsets.ModelViewSet):
    """Golden images (platform staff). ``publish`` rolls pools onto a new version."""

    permission_classes = [IsStaff]
    serializer_class = ImageSerializer
    filterset_class = ImageFilter
    ordering_fields = ["name", "version", "os", "created_at"]

    def get_queryset(self):
        with scopes_disabled():
            return Image.objects.all()

    def perform_create(self, serializer):
        serializer.instance = image_save(image=Image(**serializer.validated_data))

    def perform_update(self, serializer):
        for name, value in serializer.validated_data.items():
            setattr(serializer.instance, name, value)
        image_save(image=serializer.instance)

    def perform_destroy(self, instance):
        image_delete(image=instance)

    @extend_schema(request=None, responses={200: ImagePublishSerializer})
    @action(detail=True, methods=["post"])
    def publish(self, request, pk):
        """Roll every pool on an older version of this image (same name and owner) onto it:
        new desktops use it, idle floating desktops are recycled onto it in the background,
        dedicated desktops keep theirs until reset."""
        with scopes_disabled():
            image = self.get_object()
        pools = image_publish(image=image)
        return Response({"image": str(pk), "pools": [str(pool.id) for pool in pools]})


