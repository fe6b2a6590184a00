from rest_framework import viewsets

from hypervisors.models import Host
from hypervisors.services import host_create
from tenants.api.base import IsStaff

from .serializers import HostSerializer


class HostViewSet(viewsets.ModelViewSet):
    """Hypervisor hosts (platform staff)."""

    permission_classes = [IsStaff]
    serializer_class = HostSerializer
    queryset = Host.objects.all()
    filterset_fields = ["state", "enabled", "virt_type"]
    ordering_fields = ["name", "created_at"]
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def perform_create(self, serializer):
        serializer.instance = host_create(**serializer.validated_data)
