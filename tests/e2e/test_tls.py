"""Tenants apart on the wire: a host reached over ``qemu+tls://`` and consoles over TLS only.

The lab's libvirtd also listens with TLS on 127.0.0.1:16514 (``VDI_LAB_TLS_URI``, the lab's
client certificate in ``pkipath``); its certificate, from the lab's CA (scripts/lab-pki),
names 127.0.0.1 only, so the same daemon reached as ``localhost``
(``VDI_LAB_TLS_MISMATCH_URI``) presents a certificate for another name, and a client
trusting an unrelated CA (``VDI_LAB_TLS_WRONG_CA_URI``) does not trust it. QEMU's SPICE
displays offer TLS with the lab CA's certificate for the console address (``spice_tls`` in
qemu.conf); a host with a console CA gets SPICE displays that offer TLS only.
"""

from __future__ import annotations

import configparser
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from brokers.choices import SessionState
from brokers.models import Session
from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from tests.e2e.lab import desktop_in, register_lab_host, session_connected, tail
from tests.processes import host_watcher, wait_for
from vdi.choices import DesktopState

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# What remote-viewer (spice-gtk) logs when the display's certificate is not from the .vv's CA.
UNTRUSTED_CERTIFICATE = "Error in certificate chain verification"


def lab_value(lab, key: str) -> str:
    """A TLS setting of the lab; its absence fails the test (in the test, so it reads FAILED)."""
    if not lab.get(key):
        pytest.fail(f"the lab has no TLS endpoint: lab.env lacks {key}; rerun `scripts/lab "
                    "start` (it makes the lab's certificates and starts libvirtd with TLS)",
                    pytrace=False)
    return lab[key]


def console_file(member, session_id: str, path: Path) -> dict[str, str]:
    """The session's .vv file, written to ``path`` for remote-viewer; its keys."""
    response = member.get(f"/api/v1/tenants/acme/sessions/{session_id}/console.vv")
    assert response.status_code == 200, response.content
    path.write_bytes(response.content)
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(response.content.decode())
    return dict(parser["virt-viewer"])


def test_a_qemu_tls_host_runs_a_desktop_whose_console_remote_viewer_reaches_over_tls_only(
    api, lab, make_pool, worker, libvirt_conn, lab_image, tmp_path, remote_viewer
):
    console_ca = Path(lab_value(lab, "VDI_LAB_CONSOLE_CA")).read_text()
    wrong_ca = Path(lab_value(lab, "VDI_LAB_WRONG_CA")).read_text()
    subject = lab_value(lab, "VDI_LAB_CONSOLE_TLS_SUBJECT")
    host = register_lab_host(api, lab, worker, name="lab-tls",
                             uri=lab_value(lab, "VDI_LAB_TLS_URI"),
                             console_ca_cert=console_ca, console_tls_subject=subject)
    pool = make_pool(image=lab_image, memory_mb=160, protocol="spice", min_ready=1)
    desktop = desktop_in(pool, DesktopState.RUNNING, worker)
    assert desktop.host_id == host.id

    # A host with a console CA: libvirt gave the SPICE display a TLS port and no clear one.
    spice = ET.fromstring(libvirt_conn.lookupByName(desktop.name).XMLDesc(0)).find(
        "./devices/graphics[@type='spice']")
    assert spice.get("defaultMode") == "secure"
    assert spice.get("port") in (None, "-1")
    tls_port = spice.get("tlsPort")
    assert tls_port and int(tls_port) > 0
    member = api("member")
    connect = member.post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert connect.status_code == 200, connect.content
    session_id = connect.json()["session"]

    with host_watcher(tmp_path) as watcher_log:
        # The .vv trusting another CA: remote-viewer refuses the display's certificate.
        Host.objects.filter(pk=host.pk).update(console_ca_cert=wrong_ca)
        keys = console_file(member, session_id, tmp_path / "wrong-ca.vv")
        assert keys["ca"].replace("\\n", "\n") == wrong_ca.strip()
        with remote_viewer(tmp_path / "wrong-ca.vv") as viewer:
            wait_for(lambda: UNTRUSTED_CERTIFICATE in viewer.output(), 30,
                     lambda: f"remote-viewer to refuse the certificate:\n{viewer.output()}")
        with scopes_disabled():
            assert Session.objects.get(pk=session_id).state == SessionState.READY

        # The host's own CA: remote-viewer logs in, over TLS as nothing else is offered.
        Host.objects.filter(pk=host.pk).update(console_ca_cert=console_ca)
        keys = console_file(member, session_id, tmp_path / "desktop.vv")
        assert "port" not in keys
        assert keys["tls-port"] == tls_port
        assert keys["host-subject"] == subject
        assert keys["ca"].replace("\\n", "\n") == console_ca.strip()
        with remote_viewer(tmp_path / "desktop.vv") as viewer:
            session = session_connected(session_id, viewer.log, watcher_log)
            assert session.client_address == "127.0.0.1"
            assert UNTRUSTED_CERTIFICATE not in viewer.output(chars=100_000)


def test_a_host_whose_certificate_is_refused_is_down_at_once_with_the_reason_and_stays_down(
    api, lab, worker
):
    mismatch_uri = lab_value(lab, "VDI_LAB_TLS_MISMATCH_URI")
    staff = api("staff")
    response = staff.post("/api/v1/hosts/", {
        "name": "lab-tls-mismatch", "uri": mismatch_uri, "virt_type": "qemu",
        "console_address": lab["VDI_LAB_CONSOLE_ADDRESS"], "storage_pool": lab["VDI_LAB_POOL"],
    }, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])

    def checked(state: str, failures: int):
        def done():
            host.refresh_from_db()
            return host.state == state and host.failures == failures
        wait_for(done, 60, lambda: f"host {state} after {failures} failure(s) (state "
                 f"{host.state}, {host.failures}: {host.last_error}; worker log:\n{tail(worker)})")
        return host.last_error

    reason = checked(HostState.DOWN, 1)
    assert "Failed to verify peer's certificate" in reason
    assert "the certificate of localhost:16514 is refused: Hostname mismatch, certificate is " \
           "not valid for 'localhost'" in reason

    # The next check says the same: nothing retries it away.
    assert staff.post(f"/api/v1/hosts/{host.id}/refresh/").status_code in (200, 202)
    assert checked(HostState.DOWN, 2) == reason

    # Through the name its certificate carries, the same daemon is fine...
    patched = staff.patch(f"/api/v1/hosts/{host.id}/", {"uri": lab_value(lab, "VDI_LAB_TLS_URI")},
                          format="json")
    assert patched.status_code == 200, patched.content
    assert checked(HostState.UP, 0) == ""

    # ...and an up host meeting the mismatch is down after that one check, not three.
    patched = staff.patch(f"/api/v1/hosts/{host.id}/", {"uri": mismatch_uri}, format="json")
    assert patched.status_code == 200, patched.content
    assert checked(HostState.DOWN, 1) == reason

    # A worker trusting another CA: the host's certificate is not trusted, and says so.
    patched = staff.patch(f"/api/v1/hosts/{host.id}/",
                          {"uri": lab_value(lab, "VDI_LAB_TLS_WRONG_CA_URI")}, format="json")
    assert patched.status_code == 200, patched.content
    assert checked(HostState.DOWN, 2).endswith(
        "the certificate of 127.0.0.1:16514 is refused: unable to get local issuer certificate")
