"""What the console proxy's tests play: browsers speaking raw websocket upgrades (over TLS
when asked), a fake VNC display, and a real ``manage.py console_proxy`` process."""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading

from tests.processes import ROOT, running

PORTAL = "http://portal.test:8000"
RFB_BANNER = b"RFB 003.008\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def upgrade_request(port: int, path: str, origin: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def browser_frame(data: bytes) -> bytes:
    """One short binary websocket frame as a browser sends it: masked, here with a zero key,
    which leaves the payload as it is."""
    assert len(data) < 126
    return bytes([0x82, 0x80 | len(data)]) + bytes(4) + data


def dial(port: int, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
         timeout_s: float = 10) -> socket.socket:
    """A connection to a proxy: plain TCP, or wss:// with ``tls``, the client's context
    (raises ``ssl.SSLError`` when the handshake fails)."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    return tls.wrap_socket(sock, server_hostname=host) if tls is not None else sock


def read_all(sock: socket.socket, timeout_s: float = 10, *, until: bytes | None = None) -> bytes:
    """What the other side sends until it hangs up, ``timeout_s`` passes or ``until``
    is among it."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(OSError):
        while until is None or until not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def status_of(response: bytes) -> int | None:
    """The HTTP status of a handshake answer; None when the proxy hung up without one."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response.split(b" ", 2)[1])


def ws_handshake(port: int, path: str, origin: str | None, host: str = "127.0.0.1",
                 read_s: float = 5, tls: ssl.SSLContext | None = None
                 ) -> tuple[int | None, bytes]:
    """A raw websocket upgrade against a running proxy: (status, everything it sent).

    websockify's own client drops the query string (the token), so this speaks HTTP itself.
    After a 101 it reads what the proxy forwards (e.g. the RFB banner) until ``read_s``.
    """
    with dial(port, host=host, tls=tls) as sock:
        sock.sendall(upgrade_request(port, path, origin))
        response = read_all(sock, read_s)
    return status_of(response), response


@contextlib.contextmanager
def fake_vnc(connections: int = 10, *, held: list | None = None):
    """A TCP server that greets each connection with an RFB banner and hangs up; given a
    ``held`` list, it keeps each connection open there instead (as a display does while
    nobody types) until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    served = []

    def serve():
        while not stop.is_set() and len(served) < connections:
            try:
                conn, address = listener.accept()
            except TimeoutError:
                continue
            served.append(address)
            conn.sendall(RFB_BANNER)
            if held is None:
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], served
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held or ():
            conn.close()
        listener.close()


def closed_by_peer(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the other side closes ``sock`` within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset: closed as well
    return True


@contextlib.contextmanager
def proxy_process(port: int, log_dir, *, env: dict[str, str] | None = None,
                  args: tuple[str, ...] = ()):
    """A real ``manage.py console_proxy`` on ``port`` (with more command-line ``args``),
    allowing ``PORTAL``, until the block ends; yields its log file."""
    command = [sys.executable, str(ROOT / "manage.py"), "console_proxy", "--listen",
               f"127.0.0.1:{port}", *args]
    env = {"VDI_CONSOLE_ALLOWED_ORIGINS": PORTAL, **(env or {})}
    with running(command, log_dir / "proxy.log", "console proxy listening", env) as log:
        yield log
