"""The libvirt driver against libvirt's in-process test driver (``test:///default``).

The test driver's state is shared by every connection in this process, so each test uses
names of its own and removes what it made.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import libvirt
import pytest

from hypervisors.domain_xml import DomainSpec, build_domain_xml
from hypervisors.drivers import (
    CertificateError,
    ConsolePorts,
    ConsoleTicketUnsupported,
    DriverError,
    NotFound,
    PermanentDriverError,
    PowerState,
    TransientDriverError,
)
from hypervisors.drivers.libvirt_driver import LibvirtDriver

URI = "test:///default"
POOL = "default-pool"
# A daemon URI whose socket cannot exist: a real "cannot reach the host" error from libvirt.
UNREACHABLE_URI = "test+unix:///default?socket=/nonexistent/vdi-tests/libvirt-sock"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def driver() -> LibvirtDriver:
    return LibvirtDriver(URI, timeout_s=10)


@pytest.fixture
def libvirt_conn():
    """A connection of the test's own, to look at the test driver's state directly."""
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@pytest.fixture
def volumes(driver):
    """Names of volumes to delete from the pool after the test."""
    names: list[str] = []
    yield names
    for name in reversed(names):  # overlays before their bases
        driver.delete_volume(POOL, name)


@pytest.fixture
def domain_name(driver):
    name = unique("desk")
    yield name
    driver.destroy(name)
    driver.undefine(name)


def domain_xml(name: str) -> str:
    return build_domain_xml(
        DomainSpec(
            name=name, uuid=str(uuid.uuid4()), virt_type="qemu", vcpus=1, memory_mb=256,
            disk_path=f"/{POOL}/{name}.qcow2", console_address="127.0.0.1",
        )
    )


def libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it for ``code`` from ``domain``."""
    error = libvirt.libvirtError(message)
    error.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return error


@pytest.fixture
def count_opens(monkeypatch):
    """A list that gets one entry per connection the driver opens."""
    opened: list[str] = []
    real_open = libvirt.open

    def counting_open(uri=None):
        opened.append(uri)
        return real_open(uri)

    monkeypatch.setattr(libvirt, "open", counting_open)
    return opened


# --- host -----------------------------------------------------------------------------------
def test_host_info_reports_the_test_node(driver, libvirt_conn):
    info = driver.host_info()

    _model, memory_mb, cpus, *_ = libvirt_conn.getInfo()
    assert info.cpus == cpus > 0
    assert info.memory_mb == memory_mb > 0
    assert info.hypervisor == "TEST"
    assert info.simulated is True
    assert info.hostname


# --- storage --------------------------------------------------------------------------------
def test_create_volume_makes_it_exist(driver, volumes, libvirt_conn):
    name = unique("vol") + ".qcow2"
    assert driver.volume_exists(POOL, name) is False

    volumes.append(name)
    path = driver.create_volume(POOL, name, 1)

    assert driver.volume_exists(POOL, name) is True
    volume = libvirt_conn.storagePoolLookupByName(POOL).storageVolLookupByName(name)
    assert volume.path() == path
    root = ET.fromstring(volume.XMLDesc(0))
    assert root.find("./target/format").get("type") == "qcow2"
    assert int(root.findtext("capacity")) == 1024**3


def test_volume_names_are_escaped_in_the_volume_xml(driver, volumes):
    name = unique("R&D <base>") + ".qcow2"
    volumes.append(name)

    driver.create_volume(POOL, name, 1)

    assert driver.volume_exists(POOL, name)


def test_create_overlay_is_backed_by_the_base(driver, volumes, libvirt_conn):
    base, overlay = unique("base") + ".qcow2", unique("clone") + ".qcow2"
    volumes.append(base)
    base_path = driver.create_volume(POOL, base, 1)
    volumes.append(overlay)

    path = driver.create_overlay(POOL, overlay, base, 1)

    volume = libvirt_conn.storagePoolLookupByName(POOL).storageVolLookupByName(overlay)
    assert volume.path() == path != base_path
    root = ET.fromstring(volume.XMLDesc(0))
    assert root.find("./target/format").get("type") == "qcow2"
    assert root.findtext("./backingStore/path") == base_path
    assert root.find("./backingStore/format").get("type") == "qcow2"


def test_create_overlay_of_a_missing_base_is_not_found(driver):
    with pytest.raises(NotFound):
        driver.create_overlay(POOL, unique("clone"), unique("no-such-base"), 1)


def test_delete_volume_twice_is_harmless(driver):
    name = unique("vol") + ".qcow2"
    driver.create_volume(POOL, name, 1)

    driver.delete_volume(POOL, name)
    driver.delete_volume(POOL, name)

    assert driver.volume_exists(POOL, name) is False


@pytest.mark.parametrize(
    "call",
    [
        lambda d, pool: d.volume_exists(pool, "x.qcow2"),
        lambda d, pool: d.create_volume(pool, "x.qcow2", 1),
        lambda d, pool: d.create_overlay(pool, "x.qcow2", "base.qcow2", 1),
        # A missing pool is a misconfigured host, not an already-deleted volume.
        lambda d, pool: d.delete_volume(pool, "x.qcow2"),
    ],
    ids=["volume_exists", "create_volume", "create_overlay", "delete_volume"],
)
def test_unknown_storage_pool_is_a_clear_not_found(driver, call):
    pool = unique("no-such-pool")

    with pytest.raises(NotFound) as raised:
        call(driver, pool)

    assert isinstance(raised.value, PermanentDriverError)
    assert "storage pool" in str(raised.value).lower()
    assert pool in str(raised.value)


# --- domains --------------------------------------------------------------------------------
def test_domain_lifecycle(driver, domain_name):
    driver.define(domain_xml(domain_name))
    assert driver.power_state(domain_name) == PowerState.STOPPED

    driver.start(domain_name)
    driver.start(domain_name)  # starting a running desktop is a no-op, not an error

    assert driver.power_state(domain_name) == PowerState.RUNNING
    assert driver.list_domains()[domain_name] == PowerState.RUNNING
    # The test driver never allocates display ports: -1 must not pass for a port.
    assert driver.console_ports(domain_name) == ConsolePorts(None, None, None)

    driver.destroy(domain_name)
    assert driver.power_state(domain_name) == PowerState.STOPPED
    assert driver.list_domains()[domain_name] == PowerState.STOPPED
    driver.destroy(domain_name)  # already off

    driver.undefine(domain_name)
    assert driver.power_state(domain_name) == PowerState.MISSING
    assert domain_name not in driver.list_domains()


def test_shutdown_stops_a_running_domain(driver, domain_name):
    driver.define(domain_xml(domain_name))
    driver.start(domain_name)

    driver.shutdown(domain_name)

    assert driver.power_state(domain_name) == PowerState.STOPPED


def test_destroy_and_undefine_of_a_missing_domain_are_harmless(driver):
    name = unique("gone")

    driver.destroy(name)
    driver.undefine(name)

    assert driver.power_state(name) == PowerState.MISSING


@pytest.mark.parametrize(
    "call",
    [
        lambda d, name: d.start(name),
        lambda d, name: d.reboot(name),
        lambda d, name: d.console_ports(name),
    ],
    ids=["start", "reboot", "console_ports"],
)
def test_acting_on_a_missing_domain_is_not_found(driver, call):
    with pytest.raises(NotFound):
        call(driver, unique("gone"))


def test_console_password_is_refused_not_faked(driver, domain_name, libvirt_conn):
    driver.define(domain_xml(domain_name))
    driver.start(domain_name)

    def vnc_password() -> str:
        xml = libvirt_conn.lookupByName(domain_name).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
        return ET.fromstring(xml).find("./devices/graphics[@type='vnc']").get("passwd")

    before = vnc_password()

    with pytest.raises(ConsoleTicketUnsupported):
        driver.set_console_password(
            domain_name, "vnc", "s3cret", datetime.now(timezone.utc) + timedelta(minutes=1)
        )

    assert vnc_password() == before != "s3cret"


def test_console_password_for_a_missing_domain_is_not_found(driver):
    with pytest.raises(NotFound):
        driver.set_console_password(
            unique("gone"), "spice", "pw", datetime.now(timezone.utc) + timedelta(minutes=1)
        )


# --- errors, timeouts and connections -------------------------------------------------------
def test_bad_uri_is_a_driver_error_not_a_libvirt_error():
    with pytest.raises(PermanentDriverError) as raised:
        LibvirtDriver("test:///nonexistent/file.xml", timeout_s=10).host_info()

    assert "/nonexistent/file.xml" in str(raised.value)


def test_unreachable_daemon_is_transient():
    with pytest.raises(TransientDriverError) as raised:
        LibvirtDriver(UNREACHABLE_URI, timeout_s=10).host_info()

    assert "/nonexistent/vdi-tests/libvirt-sock" in str(raised.value)


def test_call_exceeding_the_timeout_is_transient_and_the_next_call_recovers(monkeypatch):
    release = threading.Event()
    real_get_info = libvirt.virConnect.getInfo

    def hung_get_info(conn):
        release.wait(10)  # a host that stops answering mid-call
        return real_get_info(conn)

    monkeypatch.setattr(libvirt.virConnect, "getInfo", hung_get_info)
    started = time.monotonic()
    try:
        with pytest.raises(TransientDriverError, match="did not answer within"):
            LibvirtDriver(URI, timeout_s=0.05).host_info()
    finally:
        release.set()

    assert time.monotonic() - started < 5
    assert LibvirtDriver(URI, timeout_s=10).host_info().cpus > 0


def test_a_hung_host_does_not_stall_calls_to_other_hosts(monkeypatch):
    hung_uri = f"{UNREACHABLE_URI}&hung={uuid.uuid4().hex}"
    release = threading.Event()
    real_open = libvirt.open

    def open_hanging_on_one_host(uri=None):
        if uri == hung_uri:
            release.wait(10)
        return real_open(uri)

    monkeypatch.setattr(libvirt, "open", open_hanging_on_one_host)
    try:
        started = time.monotonic()
        with pytest.raises(TransientDriverError):
            LibvirtDriver(hung_uri, timeout_s=0.05).host_info()
        assert time.monotonic() - started < 2, "the timed-out caller was kept waiting"

        # The hung open is still in progress: a healthy host must answer meanwhile.
        started = time.monotonic()
        assert LibvirtDriver(URI, timeout_s=2).host_info().simulated
        assert time.monotonic() - started < 2
    finally:
        release.set()


@pytest.mark.parametrize(
    ("code", "domain"),
    [
        (libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_RPC),
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC),
        (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_REMOTE),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU),
    ],
    ids=["rpc", "system", "no-connect", "timeout"],
)
def test_connection_errors_are_transient_and_reconnect(monkeypatch, count_opens, code, domain):
    driver = LibvirtDriver(URI, timeout_s=10)
    driver.host_info()  # a cached, healthy connection
    real_get_info = libvirt.virConnect.getInfo
    failures = [libvirt_error(code, domain, "End of file while reading data")]

    def failing_once(conn):
        if failures:
            raise failures.pop()
        return real_get_info(conn)

    monkeypatch.setattr(libvirt.virConnect, "getInfo", failing_once)
    opened_before = len(count_opens)

    with pytest.raises(TransientDriverError, match="End of file"):
        driver.host_info()
    assert driver.host_info().cpus > 0

    assert len(count_opens) == opened_before + 1, "the broken connection was reused"


@pytest.mark.parametrize(
    ("code", "domain", "expected"),
    [
        (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, PermanentDriverError),
        (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN, PermanentDriverError),
        (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, NotFound),
    ],
    ids=["internal", "invalid", "no-domain"],
)
def test_other_errors_are_permanent_and_keep_the_connection(
    monkeypatch, count_opens, code, domain, expected
):
    driver = LibvirtDriver(URI, timeout_s=10)
    driver.host_info()

    def failing(conn):
        raise libvirt_error(code, domain, "guest said no")

    monkeypatch.setattr(libvirt.virConnect, "getInfo", failing)
    opened_before = len(count_opens)

    with pytest.raises(expected, match="guest said no") as raised:
        driver.host_info()

    assert not raised.value.transient
    assert isinstance(raised.value, DriverError)
    assert len(count_opens) == opened_before


# --- TLS: a refused certificate ---------------------------------------------------------------
# libvirt's words when its TLS refuses a certificate: the host's (its reason goes to libvirt's
# log only) or the worker's own.
REFUSED_CERTIFICATES = [
    (libvirt.VIR_ERR_AUTH_FAILED, "authentication failed: Failed to verify peer's certificate"),
    (libvirt.VIR_ERR_SYSTEM_ERROR, "The client certificate /etc/pki/libvirt/clientcert.pem has "
                                   "expired"),
    (libvirt.VIR_ERR_SYSTEM_ERROR, "Cannot read CA certificate '/etc/vdi/pki/cacert.pem': No "
                                   "such file or directory"),
]


def refuse_opening(monkeypatch, refused_uri: str, code: int, message: str) -> None:
    """libvirt.open of ``refused_uri`` fails as libvirt's TLS does; other URIs open."""
    real_open = libvirt.open

    def refusing_open(uri=None):
        if uri == refused_uri:
            raise libvirt_error(code, libvirt.VIR_FROM_RPC, message)
        return real_open(uri)

    monkeypatch.setattr(libvirt, "open", refusing_open)


@pytest.mark.parametrize(("code", "message"), REFUSED_CERTIFICATES,
                         ids=["peer", "own-expired", "no-ca"])
def test_a_refused_certificate_is_a_permanent_certificate_error(monkeypatch, code, message):
    # Port 1 on loopback: nothing answers, so libvirt's message is all there is to say.
    uri = "qemu+tls://127.0.0.1:1/system"
    refuse_opening(monkeypatch, uri, code, message)

    with pytest.raises(CertificateError) as raised:
        LibvirtDriver(uri, timeout_s=10).host_info()

    assert not raised.value.transient
    assert str(raised.value) == message


class _TlsEndpoint:
    """A TLS listener on loopback, as libvirtd's would be, presenting a certificate for the
    IP addresses ``names`` (expired if asked); ``pkipath`` gets its CA and a client
    certificate, a libvirt pkipath= directory."""

    def __init__(self, pkipath, *, names: list[str], expired: bool = False):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.now(timezone.utc)

        def issue(subject, key, issuer, issuer_key, *, ca, san=(), not_after):
            builder = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                       .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - timedelta(days=30)).not_valid_after(not_after)
                       .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
            if san:
                builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), False)
            return builder.sign(issuer_key, hashes.SHA256())

        def pem(path, cert=None, key=None):
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) if cert else
                             key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))

        ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1())
                                          for _ in range(3))
        ca = issue("test CA", ca_key, "test CA", ca_key, ca=True,
                   not_after=now + timedelta(days=30))
        san = [x509.IPAddress(ipaddress.ip_address(name)) for name in names]
        server = issue(names[0], server_key, "test CA", ca_key, ca=False, san=san,
                       not_after=now - timedelta(days=1) if expired else now + timedelta(days=30))
        client = issue("worker", client_key, "test CA", ca_key, ca=False,
                       not_after=now + timedelta(days=30))
        pkipath.mkdir()
        pem(pkipath / "cacert.pem", cert=ca)
        pem(pkipath / "clientcert.pem", cert=client)
        pem(pkipath / "clientkey.pem", key=client_key)
        pem(pkipath / "servercert.pem", cert=server)
        pem(pkipath / "serverkey.pem", key=server_key)

        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(pkipath / "servercert.pem", pkipath / "serverkey.pem")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                self._context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()  # the client refused the certificate

    def close(self):
        self._listener.close()


@pytest.fixture
def tls_endpoint(tmp_path):
    endpoints = []

    def make(**options):
        endpoints.append(_TlsEndpoint(tmp_path / f"pki{len(endpoints)}", **options))
        return endpoints[-1], tmp_path / f"pki{len(endpoints) - 1}"

    yield make
    for endpoint in endpoints:
        endpoint.close()


@pytest.mark.parametrize(("host", "expired", "reason"), [
    ("localhost", False, "Hostname mismatch, certificate is not valid for 'localhost'"),
    ("127.0.0.1", True, "certificate has expired"),
], ids=["hostname-mismatch", "expired"])
def test_a_refused_host_certificate_says_why(monkeypatch, tls_endpoint, host, expired, reason):
    """libvirt reports only that it refused the host's certificate; the error says why, as
    the same handshake with the URI's CA and host name finds."""
    endpoint, pkipath = tls_endpoint(names=["127.0.0.1"], expired=expired)
    uri = f"qemu+tls://{host}:{endpoint.port}/system?pkipath={pkipath}"
    refuse_opening(monkeypatch, uri, *REFUSED_CERTIFICATES[0])

    with pytest.raises(CertificateError) as raised:
        LibvirtDriver(uri, timeout_s=10).host_info()

    said = str(raised.value)
    assert said.startswith("authentication failed: Failed to verify peer's certificate: the "
                           f"certificate of {host}:{endpoint.port} is refused: ")
    assert reason in said
