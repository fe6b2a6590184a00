"""/healthz says the process is alive; /readyz whether it can serve: database, broker, a host."""

from hypervisors.models import Host
from config import health


def test_healthz_needs_nothing(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_with_a_database_a_broker_and_a_host_up(client, host):
    response = client.get("/readyz")

    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "ready", "checks": {
        "database": "ok", "broker": "ok", "hosts": "ok"}}


def test_not_ready_without_a_host_up(client, host):
    Host.objects.filter(pk=host.pk).update(state="down")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["hosts"] == "hosts: no enabled host is up"


def test_not_ready_when_the_broker_does_not_answer(client, host, settings, monkeypatch):
    from config.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")  # nothing listens

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("broker:")
    assert response.json()["checks"]["database"] == "ok"
    assert health.readiness()["broker"]


def test_not_ready_without_the_database(client, host, monkeypatch):
    from django.db import OperationalError

    class Unreachable:
        def cursor(self):
            raise OperationalError("could not connect to server")

    monkeypatch.setattr(health, "connection", Unreachable())

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "checks": {
        "database": "database: could not connect to server", "broker": "ok",
        "hosts": "hosts: not checked"}}


def test_a_disabled_host_does_not_make_the_portal_ready(client, host):
    Host.objects.filter(pk=host.pk).update(enabled=False)
    assert client.get("/readyz").status_code == 503


def test_liveness_asks_nothing_of_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert client.get("/healthz").status_code == 200
