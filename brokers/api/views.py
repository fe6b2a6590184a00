from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from brokers.consolefile import CONTENT_TYPE, vv_response
from brokers.models import Session
from brokers.selectors import session_list_for_user
from brokers.services import (
    IssuedTicket,
    console_file_ticket_issue,
    session_connect,
    session_end,
    session_takeover,
    ticket_issue,
)
from core.api.idempotency import IdempotentMixin
from tenants.api.base import ScopedQuerysetMixin, TenantScopedMixin
from core.api.exceptions import error_response
from core.api.renderers import FileErrorsAsJSONMixin, VirtViewerRenderer
from core.api.throttling import TenantThrottleMixin
from vdi.api.views import DesktopLookupMixin, PoolLookupMixin, PoolViewSet
from vdi.selectors import pool_visible_to

from .filters import SessionFilter
from .serializers import PendingSerializer, SessionSerializer, TicketSerializer


def ticket_body(request, session: Session, issued: IssuedTicket) -> dict:
    slug = session.tenant.slug
    vv_path = reverse("api:session-console-vv", kwargs={"tenant_slug": slug, "pk": session.id})
    # The browser console page: opening it issues a browser ticket of its own.
    console_path = reverse("portal-console", kwargs={"tenant_slug": slug, "pk": session.id})
    ticket = issued.ticket
    return {
        "session": session.id,
        "desktop": session.desktop_id,
        "state": "ready",
        "protocol": ticket.protocol,
        "host": ticket.host,
        "port": ticket.port,
        "tls_port": ticket.tls_port,
        "password": issued.password,
        "expires_at": ticket.expires_at,
        "vv_url": request.build_absolute_uri(vv_path),
        "console_url": request.build_absolute_uri(console_path),
        "password_applied": ticket.password_applied,
        "notice": issued.notice,
    }


def pending_response(session: Session) -> Response:
    retry_after = settings.VDI["RETRY_AFTER_S"]
    body = {"session": session.id, "state": session.state, "retry_after": retry_after,
            "operation": session.operation_id}
    return Response(PendingSerializer(body).data, status=status.HTTP_202_ACCEPTED,
                    headers={"Retry-After": str(retry_after)})


def ticket_or_pending(request, session: Session, issued: IssuedTicket | None) -> Response:
    if issued is None:
        return pending_response(session)
    return Response(TicketSerializer(ticket_body(request, session, issued)).data)


CONNECT_RESPONSES = {
    200: TicketSerializer,
    202: PendingSerializer,
    409: OpenApiResponse(description="Pool disabled or exhausted, quota exceeded, suspended."),
}


class SessionViewSet(IdempotentMixin, TenantThrottleMixin, TenantScopedMixin, ScopedQuerysetMixin,
                     FileErrorsAsJSONMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     viewsets.GenericViewSet):
    model = Session
    serializer_class = SessionSerializer
    filterset_class = SessionFilter
    ordering_fields = ["created_at", "state", "ended_at"]

    def scoped_queryset(self):
        return session_list_for_user(user=self.request.user, is_admin=self.is_admin)

    @extend_schema(request=None, responses=CONNECT_RESPONSES)
    @action(detail=True, methods=["post"])
    def ticket(self, request, tenant_slug, pk):
        session = self.get_object()
        return ticket_or_pending(request, session, ticket_issue(session=session, user=request.user))

    # Routed by hand in config/api_urls.py: the SPEC's path has no trailing slash.
    @extend_schema(responses={(200, CONTENT_TYPE): OpenApiTypes.STR})
    def console_vv(self, request, tenant_slug, pk):
        session = self.get_object()
        issued = console_file_ticket_issue(session=session, user=request.user)
        if issued is None:
            return error_response(503, "console_busy", "No worker answered in time; retry.",
                                  headers={"Retry-After": str(settings.VDI["RETRY_AFTER_S"])})
        return vv_response(session=session, ticket=issued.ticket, password=issued.password)

    def get_renderers(self):
        # console.vv also answers a client that asks for the file's own type.
        if self.action == "console_vv":
            return [JSONRenderer(), VirtViewerRenderer()]
        return super().get_renderers()

    @extend_schema(request=None, responses=SessionSerializer)
    @action(detail=True, methods=["post"])
    def end(self, request, tenant_slug, pk):
        session = session_end(session=self.get_object(), actor=request.user)
        return Response(SessionSerializer(session).data)


# Connect and takeover are the broker's actions on the vdi app's pools and desktops: routed
# under pools/ and desktops/ with the same basenames (config/api_urls.py), so their paths,
# URL names and audit actions (pool.connect, desktop.takeover) are those of the pools' and
# desktops' own actions.
class PoolConnectViewSet(PoolLookupMixin, IdempotentMixin, TenantThrottleMixin,
                         TenantScopedMixin, ScopedQuerysetMixin, viewsets.GenericViewSet):
    # Connect has no docstring of its own: the schema and OPTIONS describe it with the pools'.
    __doc__ = PoolViewSet.__doc__

    def scoped_queryset(self):
        # The pool alone, without the list's counts (which aggregate all its desktops).
        return pool_visible_to(user=self.request.user, is_admin=self.is_admin)

    @extend_schema(request=None, responses=CONNECT_RESPONSES)
    @action(detail=True, methods=["post"])
    def connect(self, request, tenant_slug, pk):
        result = session_connect(user=request.user, pool=self.get_object())
        if result.pending:
            return pending_response(result.session)
        return ticket_or_pending(request, result.session, result.ticket)


class DesktopTakeoverViewSet(DesktopLookupMixin, IdempotentMixin, TenantThrottleMixin,
                             TenantScopedMixin, ScopedQuerysetMixin, viewsets.GenericViewSet):
    admin_actions = TenantScopedMixin.admin_actions | {"takeover"}

    @extend_schema(request=None, responses=CONNECT_RESPONSES)
    @action(detail=True, methods=["post"])
    def takeover(self, request, tenant_slug, pk):
        """Take the desktop's console over (tenant admins): its user's session ends, you get a
        session and a fresh ticket; the takeover is audited."""
        result = session_takeover(desktop=self.get_object(), actor=request.user)
        return ticket_or_pending(request, result.session, result.ticket)
