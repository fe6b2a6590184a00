"""The native path for real: the portal's `.vv` file opened by `remote-viewer` (Debian's
virt-viewer) on a virtual X display, logging in to a real guest's SPICE display. The login
is seen the way the product sees it: the host's graphics event marks the session connected.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from brokers.choices import SessionState
from brokers.models import Session
from tenants.scoping import scopes_disabled
from tests.e2e.lab import desktop_in, tail
from tests.processes import host_watcher, wait_for
from vdi.choices import DesktopState

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def remote_viewer():
    missing = [tool for tool in ("remote-viewer", "xvfb-run") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `scripts/lab start` installs virt-viewer "
                    "and xvfb", pytrace=False)


def test_remote_viewer_opens_the_vv_file_and_logs_in(lab_pool, api, worker, tmp_path,
                                                      remote_viewer):
    pool = lab_pool(min_ready=1)
    desktop_in(pool, DesktopState.RUNNING, worker)
    member = api("member")
    connect = member.post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert connect.status_code == 200, connect.content
    session_id = connect.json()["session"]

    vv = member.get(f"/api/v1/tenants/acme/sessions/{session_id}/console.vv")
    assert vv.status_code == 200
    assert vv["Content-Type"] == "application/x-virt-viewer"
    path = tmp_path / "desktop.vv"
    path.write_bytes(vv.content)
    assert "type=spice" in vv.content.decode()

    with host_watcher(tmp_path) as watcher_log:
        log = (tmp_path / "remote-viewer.log").open("w")
        viewer = subprocess.Popen(["xvfb-run", "-a", "remote-viewer", "--debug", str(path)],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            def connected():
                with scopes_disabled():
                    session = Session.objects.get(pk=session_id)
                return session if session.state == SessionState.CONNECTED else None

            session = wait_for(connected, 60, lambda: (
                f"remote-viewer to log in (viewer log:\n"
                f"{(tmp_path / 'remote-viewer.log').read_text()[-3000:]}\nwatcher log:\n"
                f"{tail(watcher_log)})"))
            assert session.client_address == "127.0.0.1"
            assert not path.exists(), "delete-this-file=1: remote-viewer removes the file"
        finally:
            viewer.terminate()
            try:
                viewer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                viewer.kill()
            log.close()
