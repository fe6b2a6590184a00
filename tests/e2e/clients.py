"""Two small, real console clients for the end-to-end tests.

They log in the way a user's client does, so a test proves what a user would see: the ticket
the broker set on the live domain opens the display, and a stale, expired or absent one is
refused by QEMU itself.

- ``vnc_capture``: VNC password auth (RFB) through vncdotool, returns the framebuffer.
- ``spice_login``: the SPICE link handshake on the main channel (ticket encrypted with the
  server's RSA key), which is all it takes to learn whether QEMU accepts a ticket.
"""

from __future__ import annotations

import atexit
import logging
import socket
import struct
import threading
import time

from PIL import Image


class ConsoleError(Exception):
    """A console client could not finish."""


class ConsoleUnreachable(ConsoleError):
    """No answer, a refused or dropped connection, a timeout or a protocol error."""


class ConsoleAuthFailed(ConsoleError):
    """The server answered and refused the password."""


# --- VNC ------------------------------------------------------------------------------------

_reactor_lock = threading.Lock()
_reactor_started = False


def _vncdotool():
    """Import vncdotool on first use, with one ``api.shutdown()`` for the whole process.

    vncdotool runs Twisted's reactor in a background thread. A Twisted reactor cannot be
    restarted once stopped, so the clients share it and it stops only when Python exits.
    """
    global _reactor_started
    from twisted.internet import reactor  # noqa: F401  (installs the default reactor)
    from vncdotool import api, client

    with _reactor_lock:
        if not _reactor_started:
            # vncdotool forwards Twisted's chatter (every handshake step) to logging at INFO;
            # keep warnings only, which also keeps "Main loop terminated" at exit quiet.
            logging.getLogger("twisted").setLevel(logging.WARNING)
            atexit.register(api.shutdown)
            _reactor_started = True
    return api, client


def _factory_class(client):
    class Factory(client.VNCDoToolFactory):
        """vncdotool's factory, but a connection lost before login fails the login.

        Upstream only reports a lost connection to ``disconnect()`` callers, so a server that
        hangs up during the handshake would leave the caller waiting for its timeout.
        """

        def clientConnectionLost(self, connector, reason):
            super().clientConnectionLost(connector, reason)
            if not self.deferred.called:
                self.deferred.errback(reason)

    return Factory


def vnc_capture(host: str, port: int, password: str, timeout_s: float = 20) -> Image.Image:
    """Log in with VNC password auth and return a copy of the whole framebuffer.

    Raises ``ConsoleAuthFailed`` when the server refuses the password (wrong, replaced or
    expired ticket) and ``ConsoleUnreachable`` for anything else that prevents a picture.
    """
    api, client = _vncdotool()
    from twisted.internet import reactor
    from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost

    deadline = time.monotonic() + timeout_s
    proxy = api.connect(f"{host}::{port}", password=password,
                        factory_class=_factory_class(client), timeout=timeout_s)
    try:
        # The proxy waits for the login before the call runs: a refused password arrives
        # here as vncdotool's AuthenticationError, a dead port as a Twisted ConnectError.
        proxy.timeout = max(0.1, deadline - time.monotonic())
        proxy.refreshScreen(incremental=False)
        screen = proxy.protocol.screen if proxy.protocol is not None else None
        if screen is None:
            raise ConsoleUnreachable(f"VNC {host}:{port} sent no framebuffer")
        return screen.copy()
    except client.AuthenticationError as error:
        reason = str(error).strip("\x00 ")  # QEMU's reason string ends in a NUL
        raise ConsoleAuthFailed(f"VNC {host}:{port} refused the password: {reason}") from None
    except TimeoutError:
        raise ConsoleUnreachable(f"VNC {host}:{port}: no framebuffer within {timeout_s:g} s") from None
    except (ConnectError, ConnectionDone, ConnectionLost, OSError, client.ProtocolError) as error:
        raise ConsoleUnreachable(f"VNC {host}:{port}: {error}") from None
    finally:
        def close():
            # The login deferred keeps a failure we already reported; consume it, or Twisted
            # logs "Unhandled error in Deferred" when it is garbage-collected.
            proxy.factory.deferred.addErrback(lambda _failure: None)
            if proxy.protocol is not None and proxy.protocol.transport is not None:
                proxy.protocol.transport.loseConnection()

        reactor.callFromThread(close)


# --- SPICE ----------------------------------------------------------------------------------
# spice-protocol, spice/protocol.h and spice/enums.h. All integers are little-endian and the
# structs are packed.
SPICE_MAGIC = b"REDQ"
SPICE_VERSION_MAJOR = 2
SPICE_VERSION_MINOR = 2
SPICE_CHANNEL_MAIN = 1
SPICE_LINK_ERR_OK = 0
SPICE_LINK_ERR_PERMISSION_DENIED = 7
SPICE_TICKET_PUBKEY_BYTES = 162  # DER SubjectPublicKeyInfo of a 1024-bit RSA key

_LINK_HEADER = struct.Struct("<4sIII")  # magic, major, minor, size of what follows
# connection_id, channel_type, channel_id, num_common_caps, num_channel_caps, caps_offset
_LINK_MESS = struct.Struct("<IBBIII")
# error, pub_key, num_common_caps, num_channel_caps, caps_offset
_LINK_REPLY = struct.Struct(f"<I{SPICE_TICKET_PUBKEY_BYTES}sIII")


def _recv_exact(sock: socket.socket, size: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConsoleUnreachable(f"SPICE server closed the connection while sending {what}")
        data += chunk
    return bytes(data)


def spice_login(host: str, port: int, password: str, timeout_s: float = 10) -> bool:
    """Link to the SPICE main channel with ``password`` as the ticket.

    Returns True when the server accepts the ticket (SPICE_LINK_ERR_OK) and False when it
    refuses it (SPICE_LINK_ERR_PERMISSION_DENIED: wrong, replaced or expired ticket). Any other
    outcome raises ``ConsoleUnreachable``.

    No capabilities are advertised: without SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION the
    server expects the classic ticket, the NUL-terminated password encrypted with RSA-OAEP
    (SHA-1) under the public key it sent in its link reply.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    message = _LINK_MESS.pack(0, SPICE_CHANNEL_MAIN, 0, 0, 0, _LINK_MESS.size)
    header = _LINK_HEADER.pack(SPICE_MAGIC, SPICE_VERSION_MAJOR, SPICE_VERSION_MINOR, len(message))
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(header + message)

            magic, major, minor, size = _LINK_HEADER.unpack(
                _recv_exact(sock, _LINK_HEADER.size, "its link header"))
            if magic != SPICE_MAGIC:
                raise ConsoleUnreachable(f"SPICE {host}:{port}: not a SPICE server (magic {magic!r})")
            if major != SPICE_VERSION_MAJOR:
                raise ConsoleUnreachable(f"SPICE {host}:{port}: protocol {major}.{minor} not supported")
            if size < _LINK_REPLY.size:
                raise ConsoleUnreachable(f"SPICE {host}:{port}: link reply of {size} bytes is too short")
            reply = _recv_exact(sock, size, "its link reply")  # reply, then its capabilities
            error, pub_key, _common, _channel, _offset = _LINK_REPLY.unpack_from(reply)
            if error != SPICE_LINK_ERR_OK:
                raise ConsoleUnreachable(f"SPICE {host}:{port}: link refused with error {error}")

            key = serialization.load_der_public_key(pub_key)
            ticket = key.encrypt(
                password.encode() + b"\0",
                padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(),
                             label=None),
            )
            sock.sendall(ticket)
            (result,) = struct.unpack("<I", _recv_exact(sock, 4, "the link result"))
    except socket.timeout:
        raise ConsoleUnreachable(f"SPICE {host}:{port}: no answer within {timeout_s:g} s") from None
    except OSError as error:
        raise ConsoleUnreachable(f"SPICE {host}:{port}: {error}") from None

    if result == SPICE_LINK_ERR_OK:
        return True
    if result == SPICE_LINK_ERR_PERMISSION_DENIED:
        return False
    raise ConsoleUnreachable(f"SPICE {host}:{port}: link result {result}")
