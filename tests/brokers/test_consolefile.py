"""The .vv file remote-viewer opens (SPEC §3's keys)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from brokers.consolefile import render_vv
from brokers.models import ConnectionTicket, Session
from hypervisors.models import Host
from tenants.scoping import tenant_scope
from vdi.models import Desktop

CA = "-----BEGIN CERTIFICATE-----\nMIIBxTCCAW\nAbCd==\n-----END CERTIFICATE-----\n"


def make_ticket(tenant, pool, host, users, **fields) -> ConnectionTicket:
    with tenant_scope(tenant):
        desktop = Desktop.objects.create(tenant=tenant, pool=pool, image=pool.image,
                                         name="vdi-vv", vcpus=1, memory_mb=256, host=host,
                                         state="running")
        session = Session.objects.create(tenant=tenant, pool=pool, user=users["member"],
                                         desktop=desktop, state="ready")
        return ConnectionTicket.objects.create(
            tenant=tenant, session=session, desktop=desktop, protocol="spice",
            host=host.console_address, expires_at=timezone.now() + timedelta(seconds=120),
            password_applied=True, **fields)


def parse(text: str) -> dict[str, str]:
    lines = text.splitlines()
    assert lines[0] == "[virt-viewer]"
    return dict(line.split("=", 1) for line in lines[1:])


def test_a_plain_spice_file(tenant, make_pool, host, users):
    ticket = make_ticket(tenant, make_pool(), host, users, port=5900)

    keys = parse(render_vv(ticket=ticket, password="s3cret", title="Office (Acme)"))

    assert keys["type"] == "spice" and keys["host"] == "127.0.0.1" and keys["port"] == "5900"
    assert keys["password"] == "s3cret" and keys["delete-this-file"] == "1"
    assert keys["title"] == "Office (Acme)"
    assert keys["toggle-fullscreen"] == "shift+f11"
    assert keys["release-cursor"] == "shift+f12"
    assert keys["secure-attention"] == "ctrl+alt+end"
    assert "tls-port" not in keys and "ca" not in keys
    own = {k for k in keys if k not in {"type", "host", "port", "password", "delete-this-file",
                                        "title", "toggle-fullscreen", "release-cursor",
                                        "secure-attention"}}
    assert all(key.startswith("x-") for key in own)  # our own keys carry the x- prefix


def test_a_tls_host_adds_its_tls_port_subject_and_ca(tenant, make_pool, host, users):
    Host.objects.filter(pk=host.pk).update(
        console_tls_subject="C=US, O=Example, CN=kvm1.example.com", console_ca_cert=CA)
    host.refresh_from_db()
    ticket = make_ticket(tenant, make_pool(), host, users, port=5900, tls_port=5901)

    text = render_vv(ticket=ticket, password="s3cret", title="Office")
    keys = parse(text)

    assert keys["tls-port"] == "5901"
    assert keys["host-subject"] == "C=US, O=Example, CN=kvm1.example.com"
    assert keys["ca"] == CA.strip().replace("\n", "\\n")  # the PEM on one line
