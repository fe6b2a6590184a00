"""Private servers the fault tests may stop and restart: a Redis and a PostgreSQL cluster of
their own (never the machine's shared ones), a gunicorn serving the portal, and a private
sshd in front of the lab's libvirtd. Each runs until its block ends, even on failure."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.processes import ROOT, running, wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def binary(path_or_name: str, why: str) -> str:
    """An installed program; its absence fails the test with what to install."""
    found = shutil.which(path_or_name) or next(iter(sorted(glob.glob(path_or_name))), None)
    if not found:
        pytest.fail(f"{path_or_name} is not installed ({why}); `scripts/lab start` installs "
                    "it", pytrace=False)
    return found


# --- Redis ----------------------------------------------------------------------------------
@dataclass
class RedisServer:
    """redis-server on a free port with its own directory, without persistence: a restart
    loses every queued message, as a Redis that crashed or was replaced would."""

    directory: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = binary("redis-server", "the broker the Redis fault test restarts")
        self.port = self.port or free_port()
        log = (self.directory / "redis.log").open("a")
        self.process = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: answers(self.port) or self.process.poll() is not None, 20,
                 f"redis-server on port {self.port}")
        assert self.process.poll() is None, (self.directory / "redis.log").read_text()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash: nothing is saved
            self.process.wait(timeout=20)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(tmp_path: Path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL -----------------------------------------------------------------------------
def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the postgres user."""
    if os.geteuid() != 0:
        return command
    return [binary("runuser", "runs PostgreSQL as the postgres user"), "-u", "postgres", "--",
            *command]


@dataclass
class PostgresCluster:
    """A throw-away cluster (initdb, trust authentication) on a free port."""

    directory: Path
    bin_dir: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "vdi") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 60) -> None:
        result = subprocess.run(_as_postgres(list(command)), capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, \
            f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"

    def init(self) -> None:
        self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.directory} -c fsync=off")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.directory / "postgres.log"), "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                  "-t", "30", "stop")

    def createdb(self, name: str) -> None:
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", name)


@contextlib.contextmanager
def postgres_cluster():
    initdb = binary("/usr/lib/postgresql/*/bin/initdb", "the private cluster the PostgreSQL "
                    "fault test restarts (Debian: postgresql)")
    # Not under tmp_path: pytest keeps that private to root, and PostgreSQL runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="vdi-faults-postgres-"))
    cluster = PostgresCluster(directory=directory, bin_dir=Path(initdb).parent)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- the portal under gunicorn ---------------------------------------------------------------
@dataclass
class WebServer:
    url: str
    log: Path

    def request(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"Token {token}"} if token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def token(self, username: str, password: str) -> str:
        response = self.request("POST", "/api/v1/auth/token/",
                                json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return response.json()["token"]


@contextlib.contextmanager
def web_server(tmp_path: Path, env: dict[str, str] | None = None):
    """gunicorn with two sync workers, as production runs the portal."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
               f"127.0.0.1:{port}", "--workers", "2", "--timeout", "60", "--chdir", str(ROOT)]
    with running(command, tmp_path / "web.log", "Booting worker", env) as log:
        server = WebServer(url=f"http://127.0.0.1:{port}", log=log)
        wait_for(lambda: answers(port), 30, "gunicorn to listen")
        yield server


# --- a host that can vanish: a private sshd in front of the lab's libvirtd -------------------
def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class SshEndpoint:
    """The lab's libvirtd reached as a remote host is, through an sshd of this test's own
    (its own port, host key and configuration; the lab's key logs in). ``vanish`` kills the
    sshd and every session it serves: to the portal the host is gone, while the lab's
    libvirtd (and so its guests) carries on for the other tests."""

    directory: Path
    key: str
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={self.key}"
                "&no_verify=1&no_tty=1")

    def start(self) -> None:
        sshd = binary("/usr/sbin/sshd", "the host that vanishes is reached over SSH")
        keygen = binary("ssh-keygen", "the private sshd needs a host key")
        self.directory.mkdir(mode=0o700, exist_ok=True)
        host_key = self.directory / "host_ed25519"
        if not host_key.exists():
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                           check=True, timeout=30)
        authorized = self.directory / "authorized_keys"
        shutil.copyfile(f"{self.key}.pub", authorized)
        authorized.chmod(0o600)
        self.port = free_port()
        config = self.directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {host_key}\n"
            f"PidFile {self.directory / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PermitRootLogin prohibit-password\nAllowUsers root\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nAllowTcpForwarding no\n"
            "X11Forwarding no\nPrintMotd no\n"
            # Its files live under the test's temporary directory, inside world-writable /tmp.
            "StrictModes no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.process = subprocess.Popen(
            [sshd, "-D", "-f", str(config), "-E", str(self.directory / "sshd.log")])
        wait_for(lambda: answers(self.port) or self.process.poll() is not None, 20,
                 f"sshd on port {self.port}")
        assert self.process.poll() is None, (self.directory / "sshd.log").read_text()

    def vanish(self) -> None:
        if self.process is None:
            return
        for pid in [*descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=20)
        self.process = None


@contextlib.contextmanager
def ssh_endpoint(tmp_path: Path, lab: dict[str, str]):
    uri = lab.get("VDI_LAB_SSH_URI", "")
    key = uri.partition("keyfile=")[2].partition("&")[0]
    if not key or not Path(key).is_file():
        pytest.fail("the lab has no SSH key (lab.env lacks VDI_LAB_SSH_URI with a keyfile); "
                    "rerun `scripts/lab start`", pytrace=False)
    endpoint = SshEndpoint(directory=tmp_path / "sshd", key=key)
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.vanish()
