"""The console proxy serving wss:// itself (VDI_CONSOLE_PROXY_TLS_CERT/KEY, --tls-cert and
--tls-key), against a throwaway certificate authority and a real ``manage.py console_proxy``
process; how the portal's console URL follows it is in test_console_proxy.py."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from brokers.models import ConnectionTicket
from tenants.scoping import scopes_disabled
from tests.brokers.proxy_helpers import (
    PORTAL,
    RFB_BANNER,
    browser_frame,
    closed_by_peer,
    dial,
    fake_vnc,
    free_port,
    proxy_process,
    read_all,
    status_of,
    upgrade_request,
    ws_handshake,
)
from tests.processes import wait_for
from config import settings as project_settings

HANDSHAKE_TIMEOUT_S = 2


# --- a throwaway certificate authority and the proxy's certificate ----------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    else:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> SimpleNamespace:
    """``ca`` (what a trusting browser trusts), ``cert`` and ``key`` (the proxy's, for
    127.0.0.1, signed by that CA) and ``other_key`` (a key that is not the certificate's)."""
    directory = tmp_path_factory.mktemp("tls")
    ca_key, key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("Console proxy test CA", ca_key, "Console proxy test CA", ca_key, ca=True)
    cert = _certificate("127.0.0.1", key, "Console proxy test CA", ca_key, ca=False)
    files = SimpleNamespace(ca=directory / "ca.pem", cert=directory / "proxy.pem",
                            key=directory / "proxy.key", other_key=directory / "other.key")
    files.ca.write_bytes(_pem(ca))
    files.cert.write_bytes(_pem(cert))
    for path, private in ((files.key, key), (files.other_key, other_key)):
        path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


@pytest.fixture
def trusting(tls_files) -> ssl.SSLContext:
    """A browser's TLS context that trusts the test CA (and nothing else)."""
    return ssl.create_default_context(cafile=str(tls_files.ca))


@pytest.fixture
def wss_proxy(tls_files, tmp_path):
    """``port, proxy = wss_proxy()``: a real proxy (``with proxy as log``) serving wss://
    with the test certificate, named by the settings (VDI_CONSOLE_PROXY_TLS_CERT/KEY), or
    ``by_options`` by --tls-cert/--tls-key over settings that name files that do not exist."""

    def start(*, by_options: bool = False):
        port = free_port()
        cert, key = str(tls_files.cert), str(tls_files.key)
        env = {"VDI_CONSOLE_PROXY_HANDSHAKE_TIMEOUT_S": str(HANDSHAKE_TIMEOUT_S)}
        if by_options:
            env.update(VDI_CONSOLE_PROXY_TLS_CERT="/nonexistent/console.crt",
                       VDI_CONSOLE_PROXY_TLS_KEY="/nonexistent/console.key")
            return port, proxy_process(port, tmp_path, env=env,
                                       args=("--tls-cert", cert, "--tls-key", key))
        env.update(VDI_CONSOLE_PROXY_TLS_CERT=cert, VDI_CONSOLE_PROXY_TLS_KEY=key)
        return port, proxy_process(port, tmp_path, env=env)

    return start


def ticket_used(issued) -> bool:
    with scopes_disabled():
        return ConnectionTicket.objects.get(pk=issued.ticket.pk).used_at is not None


# --- the proxy over wss:// --------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_browser_that_trusts_the_certificate_gets_its_console_over_wss(
        browser_ticket, wss_proxy, trusting):
    """The console handshake over TLS, then bytes both ways between the browser and the
    (fake) display; the start-up line says wss://. The certificate comes from the command's
    options, which win over settings that would stop the start."""
    held = []
    port, proxy = wss_proxy(by_options=True)
    with fake_vnc(held=held) as (vnc_port, served), proxy as log:
        assert f"console proxy listening on wss://127.0.0.1:{port}/ (TLS" in log.read_text()
        issued = browser_ticket(vnc_port)
        with dial(port, tls=trusting) as browser:
            assert browser.version() in {"TLSv1.2", "TLSv1.3"}
            browser.sendall(upgrade_request(port, f"/?token={issued.token}", PORTAL))
            received = read_all(browser, until=RFB_BANNER)
            assert status_of(received) == 101, (received, log.read_text())
            assert RFB_BANNER in received  # the display's greeting, through the websocket

            browser.sendall(browser_frame(b"RFB 003.008\n"))  # the browser's answer
            display = wait_for(lambda: held and held[0], 10, "the display's connection")
            display.settimeout(10)
            assert display.recv(64) == b"RFB 003.008\n"
            display.sendall(b"\x00\x00\x00\x01")
            assert b"\x00\x00\x00\x01" in read_all(browser, until=b"\x00\x00\x00\x01")
        assert len(served) == 1 and ticket_used(issued)
        output = log.read_text()
    assert issued.token not in output


@pytest.mark.django_db(transaction=True)
def test_a_browser_that_does_not_trust_the_certificate_fails_the_tls_handshake(
        browser_ticket, wss_proxy, trusting):
    port, proxy = wss_proxy()
    with fake_vnc() as (vnc_port, served), proxy as log:
        with pytest.raises(ssl.SSLCertVerificationError):
            dial(port, tls=ssl.create_default_context())  # the system's CAs only
        # The proxy goes on serving those who trust it.
        issued = browser_ticket(vnc_port)
        status, received = ws_handshake(port, f"/?token={issued.token}", PORTAL, read_s=5,
                                        tls=trusting)
        assert status == 101 and RFB_BANNER in received, (received, log.read_text())
        assert len(served) == 1


@pytest.mark.django_db(transaction=True)
def test_a_plain_ws_request_to_the_tls_port_gets_nothing_and_spends_no_token(
        browser_ticket, wss_proxy):
    port, proxy = wss_proxy()
    with fake_vnc() as (vnc_port, served), proxy as log:
        issued = browser_ticket(vnc_port)
        status, received = ws_handshake(port, f"/?token={issued.token}", PORTAL, read_s=5)
        assert (status, received) == (None, b""), received
        assert served == [] and not ticket_used(issued)
        wait_for(lambda: "TLS handshake failed" in log.read_text(), 10,
                 lambda: f"the refusal in the log:\n{log.read_text()}")
        assert issued.token not in log.read_text()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client_sends", [b"", b"\x16\x03\x01\x02\x00\x01"],
                         ids=["nothing", "half a client hello"])
def test_a_tls_handshake_that_does_not_finish_is_cut_at_the_deadline(client_sends, wss_proxy):
    """A client that opens TCP and sends nothing, or starts a TLS handshake and stalls, is
    closed by the handshake deadline (2 s here)."""
    port, proxy = wss_proxy()
    with proxy as log, dial(port) as client:
        client.sendall(client_sends)
        assert closed_by_peer(client, HANDSHAKE_TIMEOUT_S + 3), log.read_text()
        wait_for(lambda: f"no websocket handshake within {HANDSHAKE_TIMEOUT_S} s"
                 in log.read_text(), 10, lambda: f"the deadline in the log:\n{log.read_text()}")


# --- the settings and the command -------------------------------------------------------------
@pytest.mark.parametrize("cert, key", [("/etc/vdi/console.crt", ""),
                                       ("", "/etc/vdi/console.key")])
def test_the_tls_settings_go_together(cert, key, monkeypatch):
    monkeypatch.setenv("VDI_CONSOLE_PROXY_TLS_CERT", cert)
    monkeypatch.setenv("VDI_CONSOLE_PROXY_TLS_KEY", key)
    with pytest.raises(ImproperlyConfigured, match="VDI_CONSOLE_PROXY_TLS_CERT and "
                                                   "VDI_CONSOLE_PROXY_TLS_KEY go together"):
        project_settings._console_proxy_tls()


def test_the_tls_settings_both_or_neither(monkeypatch):
    monkeypatch.setenv("VDI_CONSOLE_PROXY_TLS_CERT", " /etc/vdi/console.crt ")
    monkeypatch.setenv("VDI_CONSOLE_PROXY_TLS_KEY", "/etc/vdi/console.key")
    assert project_settings._console_proxy_tls() == ("/etc/vdi/console.crt",
                                                     "/etc/vdi/console.key")
    monkeypatch.delenv("VDI_CONSOLE_PROXY_TLS_CERT")
    monkeypatch.delenv("VDI_CONSOLE_PROXY_TLS_KEY")
    assert project_settings._console_proxy_tls() == ("", "")


def command_error(*args: str) -> str:
    with pytest.raises(CommandError) as refused:
        call_command("console_proxy", "--listen", f"127.0.0.1:{free_port()}", *args)
    return str(refused.value)


def test_the_proxy_refuses_to_start_with_a_certificate_it_cannot_use(tls_files, tmp_path):
    missing = tmp_path / "missing.pem"
    assert command_error("--tls-cert", str(missing), "--tls-key", str(tls_files.key)) == (
        f"cannot read the console proxy's TLS certificate {missing}: No such file or directory")
    assert f"TLS key {missing}: No such file" in command_error(
        "--tls-cert", str(tls_files.cert), "--tls-key", str(missing))
    assert "certificate chain and its matching private key" in command_error(
        "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.other_key))
    assert "certificate chain and its matching private key" in command_error(
        "--tls-cert", str(tls_files.key), "--tls-key", str(tls_files.key))
    assert "go together" in command_error("--tls-cert", str(tls_files.cert))


def test_settings_naming_a_missing_certificate_stop_the_start(settings):
    settings.VDI = {**settings.VDI, "CONSOLE_PROXY_TLS_CERT": "/nonexistent/console.crt",
                    "CONSOLE_PROXY_TLS_KEY": "/nonexistent/console.key"}
    assert command_error() == ("cannot read the console proxy's TLS certificate "
                               "/nonexistent/console.crt: No such file or directory")
