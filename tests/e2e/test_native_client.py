"""The native path for real: the portal's `.vv` file opened by `remote-viewer` (Debian's
virt-viewer) on a virtual X display, logging in to a real guest's SPICE display. The login
is seen the way the product sees it: the host's graphics event marks the session connected.
"""

from __future__ import annotations

import pytest

from tests.e2e.lab import desktop_in, session_connected
from tests.processes import host_watcher
from vdi.choices import DesktopState

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


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

    with host_watcher(tmp_path) as watcher_log, remote_viewer(path) as viewer:
        session = session_connected(session_id, viewer.log, watcher_log)
        assert session.client_address == "127.0.0.1"
        assert not path.exists(), "delete-this-file=1: remote-viewer removes the file"
