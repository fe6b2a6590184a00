"""Small, real console clients for the end-to-end tests.

They log in the way a user's client does, so a test proves what a user would see: the ticket
the broker set on the live domain opens the display, and a stale, expired or absent one is
refused by QEMU itself.

- ``vnc_capture``: VNC password auth (RFB) through vncdotool, returns the framebuffer.
- ``spice_login``: the SPICE link handshake on the main channel (ticket encrypted with the
  server's RSA key), which is all it takes to learn whether QEMU accepts a ticket;
  ``SpiceSession`` stays connected after it and notices when QEMU drops it.
- ``ConsoleWebsocket``: a browser console's websocket through the console proxy (upgrade,
  frames, the close code and reason), without a browser.
- ``RemoteViewer``: Debian's remote-viewer itself opening a ``.vv`` file on a virtual X
  display, with its debug output to read.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

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


def _spice_link(host: str, port: int, password: str, timeout_s: float):
    """The link handshake on the main channel with ``password`` as the ticket: returns the
    connected socket and the server's link result (the caller closes the socket).

    No capabilities are advertised: without SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION the
    server expects the classic ticket, the NUL-terminated password encrypted with RSA-OAEP
    (SHA-1) under the public key it sent in its link reply.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    message = _LINK_MESS.pack(0, SPICE_CHANNEL_MAIN, 0, 0, 0, _LINK_MESS.size)
    header = _LINK_HEADER.pack(SPICE_MAGIC, SPICE_VERSION_MAJOR, SPICE_VERSION_MINOR, len(message))
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as error:
        raise ConsoleUnreachable(f"SPICE {host}:{port}: {error}") from None
    try:
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
        sock.close()
        raise ConsoleUnreachable(f"SPICE {host}:{port}: no answer within {timeout_s:g} s") from None
    except OSError as error:
        sock.close()
        raise ConsoleUnreachable(f"SPICE {host}:{port}: {error}") from None
    except BaseException:
        sock.close()
        raise
    return sock, result


def _accepted(host: str, port: int, result: int) -> bool:
    if result == SPICE_LINK_ERR_OK:
        return True
    if result == SPICE_LINK_ERR_PERMISSION_DENIED:
        return False
    raise ConsoleUnreachable(f"SPICE {host}:{port}: link result {result}")


def spice_login(host: str, port: int, password: str, timeout_s: float = 10) -> bool:
    """Link to the SPICE main channel with ``password`` as the ticket, then hang up.

    Returns True when the server accepts the ticket (SPICE_LINK_ERR_OK) and False when it
    refuses it (SPICE_LINK_ERR_PERMISSION_DENIED: wrong, replaced or expired ticket). Any other
    outcome raises ``ConsoleUnreachable``.
    """
    sock, result = _spice_link(host, port, password, timeout_s)
    sock.close()
    return _accepted(host, port, result)


class SpiceSession:
    """A SPICE client that logs in with a ticket and stays connected, as remote-viewer does,
    until the server drops it: ``wait_disconnected`` tells when.

    It reads and discards what the server sends on the main channel (its init message,
    pings); it answers nothing, which QEMU tolerates on an idle main channel.
    """

    def __init__(self, host: str, port: int, password: str, timeout_s: float = 10):
        self.where = f"SPICE {host}:{port}"
        self._sock, result = _spice_link(host, port, password, timeout_s)
        if not _accepted(host, port, result):
            self._sock.close()
            raise ConsoleAuthFailed(f"{self.where} refused the ticket")

    def __enter__(self) -> SpiceSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self._sock.close()

    def connected_for(self, seconds: float) -> bool:
        """Still connected after reading for ``seconds`` (False once the server hung up)."""
        return not self.wait_disconnected(seconds)

    def wait_disconnected(self, timeout_s: float) -> bool:
        """True as soon as the server closes the connection; False if it is still open
        after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            self._sock.settimeout(remaining)
            try:
                if not self._sock.recv(65536):
                    return True
            except socket.timeout:
                return False
            except OSError:
                return True  # reset: dropped as well
        return False


# --- a browser console's websocket, without the browser --------------------------------------
WS_OPCODE_CLOSE = 0x8
WS_OPCODE_PING = 0x9


class ConsoleWebsocket:
    """What noVNC's websocket sees: the HTTP upgrade (with an ``Origin``), then the frames
    the proxy sends: the display's bytes and, when the proxy ends the console, a close frame
    with its code and reason.

    ``status`` is the HTTP status of the upgrade (101 when the proxy let it through), or None
    when the proxy hung up without answering. It sends nothing after the upgrade (noVNC
    would speak RFB next); enough to see whether, when and why a console is closed.
    """

    def __init__(self, host: str, port: int, path: str, origin: str | None,
                 timeout_s: float = 10, source: str | None = None):
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                 "Sec-WebSocket-Version: 13"]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        self._sock = socket.create_connection(
            (host, port), timeout=timeout_s,
            source_address=(source, 0) if source else None)
        self._buffer = b""
        self.data = bytearray()  # the display's bytes so far
        self._consumed = 0  # how many of them ``receive`` has handed out
        self.close_code: int | None = None
        self.close_reason = ""
        deadline = time.monotonic() + timeout_s
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            while b"\r\n\r\n" not in self._buffer:
                self._fill(deadline)
        except (ConsoleUnreachable, TimeoutError):
            pass  # refused or silent: whatever came is the answer
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        self.response = head.decode(errors="replace")
        self.status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None

    def __enter__(self) -> ConsoleWebsocket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _fill(self, deadline: float) -> None:
        """More bytes; TimeoutError when none come by ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        except OSError as error:
            raise ConsoleUnreachable(f"the connection failed: {error}") from None
        if not chunk:
            raise ConsoleUnreachable("the proxy hung up without a close frame")
        self._buffer += chunk

    def _take(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._fill(deadline)
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken

    def _frame(self, deadline: float) -> tuple[int, bytes]:
        first, second = self._take(2, deadline)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack(">H", self._take(2, deadline))
        elif size == 127:
            (size,) = struct.unpack(">Q", self._take(8, deadline))
        mask = self._take(4, deadline) if second & 0x80 else b""
        payload = self._take(size, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, payload

    def send(self, data: bytes) -> None:
        """One binary frame to the display, masked as a browser's frames are."""
        mask = os.urandom(4)
        size = len(data)
        if size < 126:
            header = bytes([0x82, 0x80 | size])
        elif size < 65536:
            header = bytes([0x82, 0x80 | 126]) + struct.pack(">H", size)
        else:
            header = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", size)
        self._sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def receive(self, size: int, timeout_s: float = 10) -> bytes:
        """The display's next ``size`` bytes, as a byte stream (frames do not matter)."""
        deadline = time.monotonic() + timeout_s
        while len(self.data) - self._consumed < size:
            try:
                opcode, payload = self._frame(deadline)
            except TimeoutError:
                raise ConsoleUnreachable(
                    f"the display sent too little within {timeout_s:g} s") from None
            if opcode == WS_OPCODE_CLOSE:
                self._closed(payload)
                raise ConsoleUnreachable(f"closed ({self.close_code} {self.close_reason!r})")
            if opcode != WS_OPCODE_PING:
                self.data += payload
        chunk = bytes(self.data[self._consumed:self._consumed + size])
        self._consumed += size
        return chunk

    def read_until(self, wanted: bytes, timeout_s: float = 10) -> bytes:
        """The display's bytes until ``wanted`` is among them (e.g. the RFB banner)."""
        deadline = time.monotonic() + timeout_s
        while wanted not in self.data:
            try:
                opcode, payload = self._frame(deadline)
            except TimeoutError:
                raise ConsoleUnreachable(f"{wanted!r} did not arrive within {timeout_s:g} s; "
                                         f"got {bytes(self.data)!r}") from None
            if opcode == WS_OPCODE_CLOSE:
                self._closed(payload)
                raise ConsoleUnreachable(f"closed ({self.close_code} {self.close_reason!r}) "
                                         f"before {wanted!r} arrived")
            if opcode != WS_OPCODE_PING:
                self.data += payload
        return bytes(self.data)

    def wait_closed(self, timeout_s: float) -> tuple[int | None, str]:
        """Read until the proxy's close frame: its (code, reason), or (None, "") when the
        console is still open after ``timeout_s``. A connection dropped without a close
        frame raises ``ConsoleUnreachable``."""
        deadline = time.monotonic() + timeout_s
        while self.close_code is None:
            try:
                opcode, payload = self._frame(deadline)
            except TimeoutError:
                return None, ""
            if opcode == WS_OPCODE_CLOSE:
                self._closed(payload)
            elif opcode != WS_OPCODE_PING:
                self.data += payload
        return self.close_code, self.close_reason

    def _closed(self, payload: bytes) -> None:
        self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        self.close_reason = payload[2:].decode(errors="replace")


RFB_SECURITY_VNC_AUTH = 2


def vnc_login_over(console: ConsoleWebsocket, password: str) -> tuple[int, int, str]:
    """noVNC's part of a browser console: RFB 3.8 with VNC authentication through the
    proxy's websocket, then ClientInit. Returns the desktop's (width, height, name) from
    ServerInit; ``ConsoleAuthFailed`` when QEMU refuses the password."""
    from vncdotool.rfb import _vnc_des, des_encrypt

    version = console.receive(12)
    if not version.startswith(b"RFB "):
        raise ConsoleUnreachable(f"not an RFB server: {version!r}")
    console.send(b"RFB 003.008\n")
    (count,) = console.receive(1)
    if count == 0:
        (size,) = struct.unpack(">I", console.receive(4))
        raise ConsoleUnreachable(f"no security types: {console.receive(size)!r}")
    offered = console.receive(count)
    if RFB_SECURITY_VNC_AUTH not in offered:
        raise ConsoleUnreachable(f"VNC authentication not offered ({list(offered)})")
    console.send(bytes([RFB_SECURITY_VNC_AUTH]))
    console.send(des_encrypt(_vnc_des(password), console.receive(16)))  # the challenge
    (result,) = struct.unpack(">I", console.receive(4))
    if result != 0:
        (size,) = struct.unpack(">I", console.receive(4))
        raise ConsoleAuthFailed(f"refused: {console.receive(size).decode(errors='replace')}")
    console.send(b"\x01")  # ClientInit: share the desktop
    width, height = struct.unpack(">HH", console.receive(4))
    console.receive(16)  # the pixel format
    (size,) = struct.unpack(">I", console.receive(4))
    return width, height, console.receive(size).decode(errors="replace")


# --- remote-viewer ---------------------------------------------------------------------------
class RemoteViewer:
    """``remote-viewer --debug`` (Debian's virt-viewer) opening a ``.vv`` file under
    ``xvfb-run``, its output in ``log``, until the block ends. It runs in a process group of
    its own, so ending it also ends the X server xvfb-run started for it."""

    def __init__(self, vv: Path, log: Path):
        self.vv, self.log = vv, log

    def __enter__(self) -> RemoteViewer:
        with self.log.open("w") as out:
            self._process = subprocess.Popen(
                ["xvfb-run", "-a", "remote-viewer", "--debug", str(self.vv)], stdout=out,
                stderr=subprocess.STDOUT, cwd=self.vv.parent, start_new_session=True)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self._process.pid, sig)
            except ProcessLookupError:
                pass  # already gone
            try:
                self._process.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue

    def output(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]
