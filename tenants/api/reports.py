"""Tenant reports for owners and admins: usage by month and the audit trail (JSON or CSV)."""

from __future__ import annotations

import re
from datetime import date

from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.choices import AuditResult, AuditSource
from tenants.models import AuditEvent
from tenants.usage import usage_for_month
from core.api.filters import ListFilterSet, choice_filter
from core.api.renderers import CSVRenderer, FileErrorsAsJSONMixin
from core.api.throttling import TenantThrottleMixin
from tenants.audit import audit_details_for
from core.errors import Forbidden, InvalidInput

from .base import ScopedQuerysetMixin, TenantScopedMixin

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class UsageSerializer(serializers.Serializer):
    month = serializers.CharField(help_text="YYYY-MM (UTC).")
    desktop_hours = serializers.FloatField()
    session_hours = serializers.FloatField()
    vcpu_hours = serializers.FloatField()
    memory_gb_hours = serializers.FloatField()
    peak_sessions = serializers.IntegerField()
    complete = serializers.BooleanField(help_text="False while the month is still running.")
    computed_at = serializers.DateTimeField()


class UsageView(TenantThrottleMixin, TenantScopedMixin, FileErrorsAsJSONMixin, APIView):
    """The tenant's usage in one month (owners and admins): desktop and session hours,
    vCPU-hours, memory GB-hours and peak concurrent sessions, exact from the state-change
    journal; ?format=csv for a CSV row."""

    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("month", OpenApiTypes.STR, description="YYYY-MM; "
                                     "the current month when absent.")],
        responses={200: UsageSerializer},
    )
    def get(self, request, tenant_slug):
        if not self.access.is_admin:
            raise Forbidden("Only the organisation's owners and admins may do this.")
        raw = request.query_params.get("month")
        if raw is None:
            today = timezone.now().date()
            month = date(today.year, today.month, 1)
        else:
            match = MONTH.match(raw)
            if match is None:
                raise InvalidInput("month must be YYYY-MM.", details={"month": [raw[:20]]})
            month = date(int(match[1]), int(match[2]), 1)
        return Response(UsageSerializer(usage_for_month(tenant=self.tenant, month=month)).data)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor_name", read_only=True, allow_null=True,
        help_text="The actor's username (kept if the account is deleted); null when the "
                  "platform acted on its own.")
    result = serializers.ChoiceField(
        choices=AuditResult.choices, read_only=True,
        help_text="ok; denied (not allowed, 403); rejected (bad input, state or quota: 400, "
                  "409); failed (attempted, but it broke).")
    source = serializers.ChoiceField(choices=AuditSource.choices, read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "object_type", "object_id", "result",
                  "details", "source", "source_ip", "request_id"]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["actor"] = data["actor"] or None
        request = self.context.get("request")
        data["details"] = audit_details_for(action=instance.action, details=data["details"],
                                            user=getattr(request, "user", None))
        return data


class AuditEventFilter(ListFilterSet):
    action = filters.CharFilter(help_text="e.g. desktop.takeover, member.add")
    object_type = filters.CharFilter(help_text="e.g. vdi.desktop")
    object_id = filters.CharFilter()
    actor = filters.CharFilter(field_name="actor_name", help_text="The actor's username.")
    result = choice_filter(AuditEvent, "result", "results")
    source = choice_filter(AuditEvent, "source", "sources")
    request_id = filters.CharFilter(help_text="Every entry of one request or task.")

    class Meta:
        model = AuditEvent
        fields = ["action", "object_type", "object_id", "actor", "result", "source",
                  "request_id"]


class AuditEventViewSet(TenantThrottleMixin, TenantScopedMixin, FileErrorsAsJSONMixin,
                        ScopedQuerysetMixin, mixins.ListModelMixin,
                        mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The tenant's audit trail (owners and admins), newest first; ?format=csv exports it."""

    model = AuditEvent
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    ordering_fields = ["created_at"]
    admin_actions = frozenset({"list", "retrieve"})
    renderer_classes = [JSONRenderer, CSVRenderer]

    def scoped_queryset(self):
        return AuditEvent.objects.all()
