from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from hypervisors.services import (
    host_activate,
    host_create,
    host_delete,
    host_drain,
    host_refresh,
    host_update,
    host_usage,
)
from tenants.api.base import IsStaff
from core.api.idempotency import IdempotentMixin

from .filters import HostFilter
from .serializers import HostSerializer


def _host_action(name: str, service, summary: str, code=status.HTTP_200_OK):
    def run(self, request, pk):
        host = service(host=self.get_object())
        return Response(HostSerializer(host).data, status=code)

    run.__name__ = name
    # extend_schema goes on top of action(): the other way round its override is lost.
    return extend_schema(request=None, responses={code: HostSerializer}, summary=summary)(
        action(detail=True, methods=["post"])(run))


class HostViewSet(IdempotentMixin, viewsets.ModelViewSet):
    """Hypervisor hosts (platform staff). Creating one starts a probe; an empty host can
    be deleted, one with desktops answers 409 until drained and emptied."""

    permission_classes = [IsStaff]
    serializer_class = HostSerializer
    filterset_class = HostFilter
    ordering_fields = ["name", "created_at", "state"]

    def get_queryset(self):
        return host_usage().order_by("name")

    def perform_create(self, serializer):
        serializer.instance = host_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = host_update(host=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        host_delete(host=instance)

    drain = _host_action(
        "drain", host_drain,
        "Maintenance: keep new desktops, starts and spare hand-outs off the host")
    activate = _host_action(
        "activate", host_activate, "Leave maintenance (or retry a down host): checked at once",
        status.HTTP_202_ACCEPTED)
    refresh = _host_action(
        "refresh", host_refresh, "Check the host and reconcile its desktops now",
        status.HTTP_202_ACCEPTED)
