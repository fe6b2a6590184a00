"""The request context: request ids, sources and client addresses for the audit trail and logs."""

import pytest
from django.test import RequestFactory, override_settings

from core import context


def _run(path="/api/v1/tenants/", **meta):
    seen = {}

    def view(request):
        from django.http import HttpResponse
        seen["ctx"] = context.current()
        return HttpResponse("ok")

    request = RequestFactory().get(path, **meta)
    response = context.RequestContextMiddleware(view)(request)
    return response, seen["ctx"]


def test_each_request_gets_an_id_echoed_in_the_response():
    response, ctx = _run()
    assert len(ctx.request_id) == 32
    assert response["X-Request-ID"] == ctx.request_id
    assert context.current().request_id is None  # nothing leaks past the request


def test_a_well_formed_client_request_id_is_kept_a_bad_one_replaced():
    response, ctx = _run(HTTP_X_REQUEST_ID="lb-1234.abc")
    assert ctx.request_id == "lb-1234.abc" == response["X-Request-ID"]
    response, ctx = _run(HTTP_X_REQUEST_ID="bad id\n<script>")
    assert ctx.request_id != "bad id\n<script>" and len(ctx.request_id) == 32


@pytest.mark.parametrize("path, source", [
    ("/api/v1/pools/", context.Source.API),
    ("/admin/vdi/pool/", context.Source.ADMIN),
    ("/t/acme/", context.Source.PORTAL),
])
def test_the_source_follows_the_path(path, source):
    assert _run(path)[1].source == source


def test_forwarded_for_is_trusted_only_as_far_as_the_configured_proxies():
    meta = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7"}
    assert _run(**meta)[1].source_ip == "10.0.0.1"
    from django.conf import settings
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}):
        assert _run(**meta)[1].source_ip == "203.0.113.7"


def test_deferred_work_runs_as_the_request_ends_even_after_a_failing_callback(caplog):
    ran = []

    def view(request):
        assert context.defer(lambda: 1 / 0)
        assert context.defer(lambda: ran.append(context.current().request_id))
        assert ran == []  # not yet: the view's transactions may still roll back
        from django.http import HttpResponse
        return HttpResponse("ok")

    response = context.RequestContextMiddleware(view)(RequestFactory().get("/t/acme/"))
    assert ran == [response["X-Request-ID"]]
    assert "deferred work" in caplog.text
    assert context.defer(lambda: None) is False  # outside a request or task: the caller's job
