"""Idempotency-Key: a retried request is answered from the first, never done twice."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver

from tenants.scoping import scopes_disabled
from core.api.idempotency import IdempotentMixin
from core.models import IdempotentRequest
from vdi.models import Operation


def power(client, desktop, kind="reboot", key="k-1"):
    return client.post(f"/api/v1/tenants/acme/desktops/{desktop.id}/{kind}/",
                       HTTP_IDEMPOTENCY_KEY=key)


def test_a_retried_request_is_replayed_not_repeated(api, member_desktop):
    member = api("member")

    first = power(member, member_desktop)
    again = power(member, member_desktop)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    with scopes_disabled():
        assert Operation.objects.filter(desktop=member_desktop, kind="reboot").count() == 1


def test_without_a_key_the_second_request_is_a_conflict(api, member_desktop):
    member = api("member")
    assert power(member, member_desktop, key="").status_code == 400  # empty key: refused
    assert member.post(f"/api/v1/tenants/acme/desktops/{member_desktop.id}/reboot/"
                       ).status_code == 202
    second = member.post(f"/api/v1/tenants/acme/desktops/{member_desktop.id}/reboot/")
    assert second.status_code == 409  # another operation is in progress


def test_a_key_reused_for_another_request_is_refused(api, member_desktop):
    member = api("member")
    assert power(member, member_desktop, "reboot").status_code == 202

    reused = power(member, member_desktop, "poweroff")

    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_keys_belong_to_their_user(api, member_desktop, users):
    assert power(api("member"), member_desktop).status_code == 202
    other = power(api("admin"), member_desktop)  # same key, another user: a new request
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "operation_in_progress"


def test_errors_are_replayed_too(api, member_desktop):
    member = api("member")
    first = power(member, member_desktop, "start")  # it is running: 409
    again = power(member, member_desktop, "start")
    assert first.status_code == again.status_code == 409
    assert again["Idempotent-Replayed"] == "true"


def test_a_replayed_ticket_does_not_store_or_repeat_the_password(api, make_pool, host,
                                                                 run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    member = api("member")
    url = f"/api/v1/tenants/acme/pools/{pool.id}/connect/"
    with run_tasks():
        first = member.post(url, HTTP_IDEMPOTENCY_KEY="connect-1")
    again = member.post(url, HTTP_IDEMPOTENCY_KEY="connect-1")

    assert first.status_code == again.status_code == 200
    assert first.json()["password"]
    assert again.json()["password"] is None
    assert again.json()["session"] == first.json()["session"]
    stored = IdempotentRequest.objects.get(key="connect-1")
    assert first.json()["password"] not in str(stored.response)


def _views(resolver=None):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern)
        elif isinstance(pattern, URLPattern):
            cls = getattr(pattern.callback, "cls", None)
            if cls is not None:
                yield pattern, cls


def test_every_api_view_that_changes_things_honours_the_key():
    exempt = {"TokenView"}  # logging in: its answer is a secret that must not be stored
    mutating = {"post", "put", "patch", "delete"}
    missing = set()
    for pattern, cls in _views():
        if ".api." not in cls.__module__ or cls.__name__ in exempt:
            continue
        actions = getattr(pattern.callback, "actions", None)  # a viewset's routes
        methods = set(actions) if actions else {m for m in mutating if hasattr(cls, m)}
        if methods & mutating and not issubclass(cls, IdempotentMixin):
            missing.add(cls.__name__)
    assert not missing
