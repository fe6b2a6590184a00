"""The .vv file remote-viewer opens (SPEC §3's keys), whatever the names in it hold."""

from __future__ import annotations

import configparser
import re
from datetime import timedelta
from urllib.parse import unquote

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.consolefile import attachment_header, render_vv
from brokers.models import ConnectionTicket, Session
from hypervisors.models import Host
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tests.api.test_slice import connect
from vdi.models import Desktop, Pool
from core.naming import single_line

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
    """The file as remote-viewer reads it: exactly one group, [virt-viewer], each key once
    (a strict parser refuses a repeated key), values unescaped as GLib does."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",),
                                       comment_prefixes=("#",))
    parser.optionxform = str  # keys as written
    parser.read_string(text)
    assert parser.sections() == ["virt-viewer"]
    assert text.count("\n[") == 0 and text.startswith("[virt-viewer]\n")
    return {key: unescape(raw) for key, raw in parser["virt-viewer"].items()}


def unescape(raw: str) -> str:
    """GLib's key file escapes: \\\\, \\n, \\s, \\t, \\r; any other is an error there."""
    escapes = {"\\": "\\", "n": "\n", "s": " ", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes[m[1]], raw)


SPEC_KEYS = {"type", "host", "port", "password", "delete-this-file", "title",
             "toggle-fullscreen", "release-cursor", "secure-attention", "x-expires-at"}


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
    assert keys["ca"] == CA.strip()  # one line in the file, the PEM once unescaped
    assert "ca=-----BEGIN CERTIFICATE-----\\nMIIBxTCCAW\\n" in text


def test_a_display_offering_only_tls_gives_a_file_without_a_clear_port(
    api, make_pool, host, run_tasks, monkeypatch
):
    """A host with a console CA defines SPICE with defaultMode='secure': libvirt gives the
    display a TLS port and no clear one. The ticket and the .vv then name the TLS port, the
    CA and the subject, and no port a client could use in clear."""
    monkeypatch.setattr("hypervisors.drivers.libvirt_driver.LibvirtDriver."
                        "set_console_password", lambda *args, **kwargs: None)
    with run_tasks():
        pool = make_pool(min_ready=1)
    Host.objects.filter(pk=host.pk).update(
        console_tls_subject="C=US, O=Example, CN=kvm1.example.com", console_ca_cert=CA)
    with scopes_disabled():
        Desktop.objects.filter(pool=pool).update(spice_port=None, spice_tls_port=5901)
    member = api("member")

    ticket = connect(member, pool, run_tasks)
    assert ticket.status_code == 200, ticket.content
    assert (ticket.json()["port"], ticket.json()["tls_port"]) == (None, 5901)
    with run_tasks():
        vv = member.get(f"/api/v1/tenants/acme/sessions/{ticket.json()['session']}/console.vv")

    assert vv.status_code == 200, vv.content
    keys = parse(vv.content.decode())
    assert "port" not in keys
    assert keys["tls-port"] == "5901"
    assert keys["host-subject"] == "C=US, O=Example, CN=kvm1.example.com"
    assert keys["ca"] == CA.strip()
    assert "x-simulated" not in keys  # the password was set on the display


HOSTILE_NAMES = [
    'Sales "EMEA"',
    "a; b",
    "Office\r\npassword=stolen",
    "Office\n[virt-viewer]\nhost=evil.example.com",
    "[evil]",
    "Büro Zürich ☕",
    "東京オフィス",
    "\\server\\share",
    "tab\there",
    "\u2028line\u2029separators\x85",
    "   ",
    "=1+1",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_stay_inside_the_title(tenant, make_pool, host, users, name):
    ticket = make_ticket(tenant, make_pool(), host, users, port=5900)

    keys = parse(render_vv(ticket=ticket, password="s3cret", title=name))

    assert set(keys) == SPEC_KEYS
    assert keys["title"] == single_line(name)
    assert keys["host"] == "127.0.0.1" and keys["password"] == "s3cret"


@settings(max_examples=300, deadline=None, database=None)  # nothing written to the work tree
@given(pool=st.text(max_size=60), organisation=st.text(max_size=60),
       subject=st.text(max_size=40), address=st.text(max_size=30))
def test_any_names_give_one_group_with_exactly_the_expected_keys(pool, organisation, subject,
                                                                 address):
    # Unsaved rows: the file is made from their fields alone.
    host = Host(name="kvm1", console_address=address, console_tls_subject=subject,
                console_ca_cert=CA)
    ticket = ConnectionTicket(desktop=Desktop(host=host), protocol="spice", host=address,
                              port=5900, tls_port=5901, password_applied=True,
                              expires_at=timezone.now())
    title = f"{pool} ({organisation})"

    keys = parse(render_vv(ticket=ticket, password="s3cret", title=title))

    expected = SPEC_KEYS | {"tls-port", "ca"} | ({"host-subject"} if single_line(subject) else
                                                 set())
    assert set(keys) == expected
    assert keys["title"] == single_line(title)
    assert keys["host"] == single_line(address)
    assert keys["ca"] == CA.strip()


ASCII_FILENAME = re.compile(r'^attachment; filename="([A-Za-z0-9 ()._+-]+\.vv)"'
                            r"(?:; filename\*=utf-8''([A-Za-z0-9%._~-]+))?$")


@pytest.mark.parametrize("name", HOSTILE_NAMES + ["Office", "../../etc/passwd", ""])
def test_the_download_name_is_safe_and_ends_in_vv(name):
    header = attachment_header(name)

    match = ASCII_FILENAME.match(header)
    assert match, header
    assert match[1].endswith(".vv") and not match[1].startswith(".")
    if match[2] is not None:  # the name as written, for browsers that read filename*
        written = unquote(match[2])
        assert written == single_line(name).replace("/", "_").replace("\\", "_") + ".vv"
        assert not single_line(name).isascii()
    else:
        assert single_line(name).isascii()


def test_a_plain_name_keeps_its_plain_file_name():
    assert attachment_header("Office") == 'attachment; filename="Office.vv"'
    assert attachment_header("Büro").startswith('attachment; filename="Buro.vv"; ')


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_api_serves_the_file_for_any_stored_name(api, make_pool, host, run_tasks, tenant,
                                                     name):
    """Names saved before the rule against control characters (or changed outside the
    portal) still give a working file: 200, a safe download name, one group."""
    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        Pool.objects.filter(pk=pool.pk).update(name=name)
        Tenant.objects.filter(pk=tenant.pk).update(name=f"Acme {name}")
    member = api("member")
    ticket = connect(member, pool, run_tasks)
    assert ticket.status_code == 200, ticket.content

    with run_tasks():
        vv = member.get(f"/api/v1/tenants/acme/sessions/{ticket.json()['session']}/console.vv",
                        HTTP_ACCEPT="application/x-virt-viewer")

    assert vv.status_code == 200, vv.content
    assert vv["Content-Type"] == "application/x-virt-viewer"
    assert ASCII_FILENAME.match(vv["Content-Disposition"]), vv["Content-Disposition"]
    keys = parse(vv.content.decode())
    assert set(keys) == SPEC_KEYS - {"port"} | {"x-simulated"}  # a simulated host: no port
    assert keys["title"] == single_line(f"{name} (Acme {name})")


@pytest.mark.parametrize("accept", ["application/x-virt-viewer", "*/*", "application/json",
                                    None])
def test_the_file_is_served_to_what_clients_ask(api, make_pool, host, run_tasks, accept):
    with run_tasks():
        pool = make_pool(min_ready=1)
    member = api("member")
    session = connect(member, pool, run_tasks).json()["session"]
    headers = {"HTTP_ACCEPT": accept} if accept else {}

    with run_tasks():
        vv = member.get(f"/api/v1/tenants/acme/sessions/{session}/console.vv", **headers)

    assert vv.status_code == 200, vv.content
    assert vv["Content-Type"] == "application/x-virt-viewer"
    assert vv.content.startswith(b"[virt-viewer]\n")


def test_errors_asking_for_the_file_keep_the_json_envelope(api, make_pool, host, run_tasks,
                                                           users):
    with run_tasks():
        pool = make_pool(min_ready=1)
    session = connect(api("member"), pool, run_tasks).json()["session"]
    path = f"/api/v1/tenants/acme/sessions/{session}/console.vv"

    missing = api("member").get("/api/v1/tenants/acme/sessions/"
                                "00000000-0000-0000-0000-000000000000/console.vv",
                                HTTP_ACCEPT="application/x-virt-viewer")
    not_yours = api("admin").get(path, HTTP_ACCEPT="application/x-virt-viewer")
    nobody = api().get(path, HTTP_ACCEPT="application/x-virt-viewer")

    for response, status in ((missing, 404), (not_yours, 403), (nobody, 401)):
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/json"
        assert set(response.json()["error"]) == {"code", "message", "details"}
