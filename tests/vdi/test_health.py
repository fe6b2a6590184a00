"""/healthz says the process is alive; /readyz whether it can serve: database, broker, a host."""

from hypervisors.models import Host
from vdi import health


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
    from vdi.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")  # nothing listens

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("broker:")
    assert response.json()["checks"]["database"] == "ok"
    assert health.readiness()["broker"]
