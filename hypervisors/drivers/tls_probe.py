"""Why TLS refused a host's certificate: libvirt only says that it did."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import parse_qsl, urlsplit

# libvirt's TLS port, and its files when a qemu+tls:// URI names no pkipath (as root).
_TLS_PORT = 16514
_DEFAULT_PKI = ("/etc/pki/CA/cacert.pem", "/etc/pki/libvirt/clientcert.pem",
                "/etc/pki/libvirt/private/clientkey.pem")
_TLS_PROBE_TIMEOUT_S = 5


def tls_refusal(uri: str) -> str:
    """Why a qemu+tls:// host's certificate fails verification (expired, issued to another
    name, not signed by the CA), or an empty string when that cannot be told.

    libvirt only logs its reason and reports "Failed to verify peer's certificate"; the same
    handshake through OpenSSL, with the URI's CA, client certificate and host name, says which.
    """
    parts = urlsplit(uri)
    if not parts.scheme.endswith("+tls") or not parts.hostname:
        return ""
    pkipath = dict(parse_qsl(parts.query)).get("pkipath")
    ca, cert, key = ((f"{pkipath}/cacert.pem", f"{pkipath}/clientcert.pem",
                      f"{pkipath}/clientkey.pem") if pkipath else _DEFAULT_PKI)
    address = (parts.hostname, parts.port or _TLS_PORT)
    try:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        with socket.create_connection(address, timeout=_TLS_PROBE_TIMEOUT_S) as sock:
            context.wrap_socket(sock, server_hostname=parts.hostname).close()
    except ssl.SSLCertVerificationError as error:
        return f"the certificate of {address[0]}:{address[1]} is refused: {error.verify_message}"
    except (OSError, ValueError):
        pass  # unreadable files, no answer, another TLS failure: libvirt's message stands
    return ""
