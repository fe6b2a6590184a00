"""Benchmark 3: real guests on the lab host (libvirtd + QEMU with TCG, the lab's tiny guest).

1. Connect with a ready desktop: K running spares and K users; each user connects through
   gunicorn, gets a ticket (a fresh console password set on the live domain by a worker:
   ``updateDeviceFlags``), ends the session (the pool keeps the desktop at logoff) and does
   it again, for ``--rounds`` rounds. The first Connect claims a spare, later ones return to
   the user's kept desktop; every one sets the password on the live domain.
2. Connect with no spare: a pool with none; from the Connect (202) until the console is
   usable: the session ready with its ticket, the guest's ready line on its serial log, and
   its VNC display answering (the RFB greeting).
3. The floor: the same domain (same XML, a fresh overlay) started with a bare `virsh start`,
   timed to the same ready line and VNC greeting.

    .venv/bin/python -m bench.real_guests [--size 3] [--rounds 10] [--cold 3]
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import statistics
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.common import (
    arguments, celery_worker, configure, database_reset, django_setup, gunicorn,
    latency_summary, redis_flush, require_libvirtd, say, write_result,
)

PASSWORD = "a long passphrase nobody guesses"


def read_lab() -> dict[str, str]:
    path = Path(os.environ.get("VDI_LAB_DIR", "/var/cache/vdi-lab")) / "lab.env"
    if not path.is_file():
        raise SystemExit(f"no lab: {path} is missing; run `VDI_LAB_HOLDER=$$ scripts/lab start`")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def serial_ready(name: str, lab: dict) -> bool:
    path = Path(lab["VDI_LAB_SERIAL_LOG_DIR"]) / f"{name}-serial.log"
    with contextlib.suppress(OSError):
        return lab["VDI_LAB_READY_LINE"] in path.read_text(errors="replace")
    return False


def vnc_answers(port: int | None) -> bool:
    if not port:
        return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(12).startswith(b"RFB ")
    except OSError:
        return False


def until(predicate, timeout_s: float = 120, step: float = 0.05) -> float:
    """Wait for ``predicate``; returns the moment (perf_counter) it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(step)
    raise TimeoutError(f"gave up after {timeout_s} s")


def seed(lab: dict, spares: int, cold: int):
    from django.contrib.auth import get_user_model

    from hypervisors.choices import HostState
    from hypervisors.models import Host
    from hypervisors.services import host_create
    from tenants.scoping import scopes_disabled, tenant_scope
    from tenants.services import membership_add, tenant_create
    from vdi.choices import ImageBoot
    from vdi.models import Image
    from vdi.services import image_save, pool_create

    host = host_create(name="lab", uri=lab["VDI_LAB_URI"], virt_type="qemu",
                       console_address=lab["VDI_LAB_CONSOLE_ADDRESS"],
                       storage_pool=lab["VDI_LAB_POOL"], max_concurrent_boots=2)
    until(lambda: Host.objects.filter(pk=host.pk, state=HostState.UP).exists(), 120, 0.2)
    tenant = tenant_create(slug="lab", name="Lab")
    with scopes_disabled():
        image = image_save(image=Image(
            name="lab-guest", version=1, base_volume=lab["VDI_LAB_BASE_VOLUME"], disk_gb=1,
            default_memory_mb=160, boot=ImageBoot.KERNEL, kernel=lab["VDI_LAB_KERNEL"],
            initrd=lab["VDI_LAB_INITRD"], cmdline=lab["VDI_LAB_CMDLINE"]))
    users = []
    for n in range(spares + cold):
        user = get_user_model().objects.create_user(f"user{n}", password=PASSWORD)
        membership_add(tenant=tenant, user=user)
        users.append(user)
    with tenant_scope(tenant):
        warm = pool_create(tenant=tenant, actor=None, name="Warm", image=image,
                           min_ready=spares, max_desktops=spares, memory_mb=160,
                           protocol="spice", on_logoff="keep")
        # No spares: every Connect (each by a new user) makes and boots a desktop; the
        # desktop stays its user's at logoff, so the next user finds no spare either.
        cold_pool = pool_create(tenant=tenant, actor=None, name="Cold", image=image,
                                min_ready=0, max_desktops=cold, memory_mb=160, protocol="vnc",
                                on_logoff="keep")
    return tenant, warm, cold_pool, users


def running_desktops(pool) -> int:
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop

    with scopes_disabled():
        return Desktop.objects.filter(pool=pool, state="running").count()


def token_for(base: str, user) -> str:
    import requests

    answer = requests.post(f"{base}/api/v1/auth/token/", timeout=60,
                           json={"username": user.username, "password": PASSWORD})
    answer.raise_for_status()
    return answer.json()["token"]


def warm_connects(base: str, tenant, pool, users, rounds: int) -> dict:
    import requests

    api = f"{base}/api/v1/tenants/{tenant.slug}"
    clients = []
    for user in users:
        http = requests.Session()
        http.headers["Authorization"] = f"Token {token_for(base, user)}"
        clients.append(http)
    timings, applied = [], []
    for _ in range(rounds):
        for http in clients:
            began = time.perf_counter()
            answer = http.post(f"{api}/pools/{pool.pk}/connect/", timeout=60)
            elapsed = time.perf_counter() - began
            assert answer.status_code == 200, (answer.status_code, answer.text[:300])
            body = answer.json()
            timings.append(elapsed)
            applied.append(body.get("password") is not None and "simulated" not in answer.text)
            http.post(f"{api}/sessions/{body['session']}/end/", timeout=60).raise_for_status()
    return {"connects": len(timings), **latency_summary(timings),
            "mean_ms": round(statistics.mean(timings) * 1000, 1),
            "passwords_set_on_live_domain": sum(applied)}


def cold_connect(base: str, tenant, pool, user, lab: dict) -> dict:
    """Connect with no spare: a desktop is made and booted; until its console is usable."""
    import requests

    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop, Operation

    api = f"{base}/api/v1/tenants/{tenant.slug}"
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token_for(base, user)}"
    began = time.perf_counter()
    answer = http.post(f"{api}/pools/{pool.pk}/connect/", timeout=60)
    assert answer.status_code == 202, (answer.status_code, answer.text[:300])
    session = answer.json()["session"]

    def ticket():
        reply = http.post(f"{api}/sessions/{session}/ticket/", timeout=60)
        return reply.json() if reply.status_code == 200 else None

    # As a client following the API: ask for the ticket until the session is ready.
    body = None

    def ready():
        nonlocal body
        body = ticket()
        return body is not None

    ticket_at = until(ready, 180, 0.25)
    with scopes_disabled():
        desktop = Desktop.objects.get(pk=body["desktop"])
        operation = Operation.objects.get(desktop=desktop, kind="provision")
    guest_at = until(lambda: serial_ready(desktop.name, lab), 180)
    vnc_at = until(lambda: vnc_answers(body["port"]), 60)
    http.post(f"{api}/sessions/{session}/end/", timeout=60).raise_for_status()
    return {"ticket_s": round(ticket_at - began, 2), "guest_ready_s": round(guest_at - began, 2),
            "vnc_s": round(vnc_at - began, 2),
            "usable_s": round(max(ticket_at, guest_at, vnc_at) - began, 2),
            # The provisioning operation: waiting for a worker, then clone + define + start.
            "operation_queued_s": round(
                (operation.started_at - operation.created_at).total_seconds(), 2),
            "operation_run_s": round(
                (operation.finished_at - operation.started_at).total_seconds(), 2),
            "desktop": desktop.name}


def bare_start(lab: dict) -> dict:
    """The floor: a fresh overlay and the same domain XML, defined ahead; then the clock
    runs from `virsh start` to the ready line and the VNC greeting."""
    import libvirt

    from hypervisors.domain_xml import DomainSpec, build_domain_xml
    from hypervisors.drivers.libvirt_driver import _volume_xml

    name = f"vdi-bench-{uuid.uuid4().hex[:10]}"
    conn = libvirt.open(lab["VDI_LAB_URI"])
    storage = conn.storagePoolLookupByName(lab["VDI_LAB_POOL"])
    base = storage.storageVolLookupByName(lab["VDI_LAB_BASE_VOLUME"]).path()
    volume = storage.createXML(_volume_xml(f"{name}.qcow2", 1, base), 0)
    serial = Path(lab["VDI_LAB_SERIAL_LOG_DIR"]) / f"{name}-serial.log"
    dom = conn.defineXML(build_domain_xml(DomainSpec(
        name=name, uuid=str(uuid.uuid4()), virt_type="qemu", vcpus=1, memory_mb=160,
        disk_path=volume.path(), console_address="127.0.0.1", kernel=lab["VDI_LAB_KERNEL"],
        initrd=lab["VDI_LAB_INITRD"], cmdline=lab["VDI_LAB_CMDLINE"],
        serial_log=str(serial), title=f"bench / {name}")))
    try:
        began = time.perf_counter()
        subprocess.run(["virsh", "-q", "-c", lab["VDI_LAB_URI"], "start", name], check=True,
                       capture_output=True)
        started = time.perf_counter()
        guest_at = until(lambda: serial_ready(name, lab), 180)
        port = int(ET.fromstring(dom.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
                   .get("port"))
        vnc_at = until(lambda: vnc_answers(port), 60)
        return {"virsh_start_s": round(started - began, 2),
                "guest_ready_s": round(guest_at - began, 2), "vnc_s": round(vnc_at - began, 2),
                "usable_s": round(max(guest_at, vnc_at) - began, 2)}
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        dom.undefine()
        volume.delete(0)
        serial.unlink(missing_ok=True)
        conn.close()


def ticket_task_times(log: Path) -> dict:
    """How long the worker's ticket tasks took (reading the live domain's XML and
    ``updateDeviceFlags``), from its log."""
    times = [float(found) for found in re.findall(
        r"brokers\.ticket_apply\[[^]]*\] succeeded in ([0-9.]+)s", log.read_text())]
    return {"tasks": len(times), **latency_summary(times)} if times else {"tasks": 0}


def remove_guests(lab: dict) -> int:
    """Destroy and undefine the desktops this benchmark made, and delete their overlays."""
    import libvirt

    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop

    with scopes_disabled():
        made = list(Desktop.objects.values_list("name", "volume_name"))
    conn = libvirt.open(lab["VDI_LAB_URI"])
    storage = conn.storagePoolLookupByName(lab["VDI_LAB_POOL"])
    for name, volume in made:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        with contextlib.suppress(libvirt.libvirtError):
            storage.storageVolLookupByName(volume).delete(0)
        (Path(lab["VDI_LAB_SERIAL_LOG_DIR"]) / f"{name}-serial.log").unlink(missing_ok=True)
    conn.close()
    return len(made)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], size=3, rounds=10, cold=3)
    configure(VDI_SHUTDOWN_GRACE_S="5")
    require_libvirtd()
    lab = read_lab()
    say(f"real guests on {lab['VDI_LAB_URI']}: {args.size} ready desktops x {args.rounds} "
        f"rounds, {args.cold} cold connects")
    database_reset()
    redis_flush()
    django_setup()

    from django.db import connection

    worker = celery_worker("lab", "vdi,console", "threads", 4)
    web = None
    try:
        tenant, warm, cold, users = seed(lab, args.size, args.cold)
        until(lambda: running_desktops(warm) >= args.size, 300, 0.5)
        connection.close()
        web, base = gunicorn(1, 4)
        say("connect with a ready desktop")
        warm_figures = warm_connects(base, tenant, warm, users[:args.size], args.rounds)
        say(f"warm: p50 {warm_figures['p50_ms']} ms, p95 {warm_figures['p95_ms']} ms")
        colds = []
        for n in range(args.cold):
            say(f"connect with no spare ({n + 1} of {args.cold})")
            colds.append(cold_connect(base, tenant, cold, users[args.size + n], lab))
    finally:
        if web is not None:
            web.stop()
        worker.stop()
        removed = remove_guests(lab)
    warm_figures["ticket_task"] = ticket_task_times(worker.log)
    bare = [bare_start(lab) for _ in range(max(1, args.cold))]

    usable = statistics.median(c["usable_s"] for c in colds)
    floor_usable = statistics.median(b["usable_s"] for b in bare)
    ratio = round(usable / floor_usable, 2) if floor_usable else None
    result = {"lab_uri": lab["VDI_LAB_URI"], "warm": warm_figures, "cold": colds,
              "cold_usable_median_s": usable, "floor": bare,
              "floor_usable_median_s": floor_usable, "floor_ratio": ratio,
              "guests_removed": removed}
    path = write_result("real_guests", result, args.out)
    say(f"results: {path}")
    print(f"real guests: connect with a ready desktop p50 {warm_figures['p50_ms']} ms, p95 "
          f"{warm_figures['p95_ms']} ms (password set on the live domain)")
    print(f"real guests: connect to usable console with no spare {usable} s; floor (virsh start "
          f"to guest ready and VNC) {floor_usable} s: the product takes {ratio}x the floor's time")


if __name__ == "__main__":
    main()
