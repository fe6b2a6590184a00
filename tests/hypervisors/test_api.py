"""The hosts API: staff only, validation, drain/activate/refresh, delete only when empty."""

from __future__ import annotations

import pytest

from hypervisors.choices import HostState
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from vdi.models import Desktop

NEW_HOST = {"name": "kvm-9", "uri": "test:///default", "virt_type": "qemu",
            "console_address": "127.0.0.1", "storage_pool": "default-pool"}


def test_staff_registers_a_host_and_its_probe_brings_it_up(api, run_tasks):
    with run_tasks():
        response = api("staff").post("/api/v1/hosts/", NEW_HOST, format="json")

    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])
    assert host.state == HostState.UP
    assert host.cpus > 0 and host.storage_free_gb is not None


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_only_staff_manage_hosts(api, host, role):
    client = api(role)

    assert client.get("/api/v1/hosts/").status_code == 403
    assert client.post("/api/v1/hosts/", NEW_HOST, format="json").status_code == 403
    assert client.post(f"/api/v1/hosts/{host.id}/drain/").status_code == 403
    assert client.delete(f"/api/v1/hosts/{host.id}/").status_code == 403


@pytest.mark.parametrize("uri,message", [
    ("http://kvm1.example.com/", "Unsupported scheme"),
    ("qemu+tls://kvm1.example.com/", "ends in /system"),
    ("kvm1.example.com", "Not a libvirt URI"),
    ("qemu+carrier-pigeon://kvm1/system", "Unsupported scheme"),
    # Transports and parameters the portal does not support (issue: host URI policy).
    ("qemu+tcp://kvm1.example.com/system", "Unsupported scheme"),
    ("qemu+unix:///system?socket=/tmp/evil.sock", "Unsupported scheme"),
    ("qemu+ext:///system?command=/bin/sh", "Unsupported scheme"),
    ("qemu+ssh://root@kvm1.example.com/system?command=/bin/sh", "Unsupported parameter"),
    ("qemu+ssh://root@kvm1.example.com/system?socket=/var/run/x", "Unsupported parameter"),
    ("qemu+ssh://root@kvm1.example.com/system?no_verify=1", "Unsupported parameter"),
    ("qemu+tls://kvm1.example.com/system?no_verify=1", "Unsupported parameter"),
    ("qemu://kvm1.example.com/system", "qemu+tls:// or qemu+ssh://"),
    ("qemu+tls:///system", "names its host"),
    ("qemu+libssh2://kvm1.example.com/system?known_hosts_verify=ignore", "Unsupported parameter"),
    ("test:///default?socket=/tmp/x", "Unsupported parameter"),
])
def test_a_malformed_uri_is_refused_and_nothing_is_created(api, users, uri, message):
    response = api("staff").post("/api/v1/hosts/", {**NEW_HOST, "uri": uri}, format="json")

    assert response.status_code == 400
    assert message in str(response.json()["error"]["details"]["uri"])
    assert not Host.objects.exists()


@pytest.mark.parametrize("uri", [
    "qemu:///system", "qemu+ssh://root@kvm1.example.com/system",
    "qemu+ssh://root@kvm1.example.com:2222/system?keyfile=/etc/vdi/id_ed25519&no_tty=1",
    "qemu+tls://kvm1.example.com/system", "qemu+tls://kvm1.example.com/system?pkipath=/etc/vdi/pki",
    "qemu+libssh2://vdi@kvm1.example.com/system?keyfile=/k&known_hosts=/kh&sshauth=privkey",
    "test:///default", "test+unix:///default?host=3",
])
def test_supported_uris_are_accepted(api, users, uri):
    response = api("staff").post("/api/v1/hosts/", {**NEW_HOST, "uri": uri}, format="json")

    assert response.status_code == 201, response.content


def test_a_lab_may_skip_its_own_sshds_host_key_check_and_only_a_lab(api, users, settings):
    uri = "qemu+ssh://root@127.0.0.1:2222/system?keyfile=/var/cache/vdi-lab/id&no_verify=1"
    refused = api("staff").post("/api/v1/hosts/", {**NEW_HOST, "uri": uri}, format="json")
    assert refused.status_code == 400 and not Host.objects.exists()

    settings.VDI = {**settings.VDI, "HOST_URI_ALLOW_NO_VERIFY": True}
    accepted = api("staff").post("/api/v1/hosts/", {**NEW_HOST, "uri": uri}, format="json")
    assert accepted.status_code == 201, accepted.content


def test_a_labs_no_verify_is_for_its_sshd_only_a_tls_host_is_always_verified(
    api, users, settings
):
    settings.VDI = {**settings.VDI, "HOST_URI_ALLOW_NO_VERIFY": True}
    tls = "qemu+tls://127.0.0.1/system?pkipath=/var/cache/vdi-lab/pki/client"

    refused = api("staff").post("/api/v1/hosts/", {**NEW_HOST, "uri": f"{tls}&no_verify=1"},
                                format="json")
    accepted = api("staff").post("/api/v1/hosts/", {**NEW_HOST, "uri": tls}, format="json")

    assert refused.status_code == 400
    assert "Unsupported parameter(s) no_verify for qemu+tls:// (supported: pkipath)" in str(
        refused.json()["error"]["details"]["uri"])
    assert accepted.status_code == 201, accepted.content


@pytest.mark.parametrize("fields, field", [
    ({"network_mode": "vlan", "vlan_range": "100-199"}, "bridge"),
    ({"network_mode": "vlan", "bridge": "br-desktops"}, "vlan_range"),
    ({"network_mode": "vlan", "bridge": "br-desktops", "vlan_range": "0-10"}, "vlan_range"),
    ({"network_mode": "vlan", "bridge": "br-desktops", "vlan_range": "300-200"}, "vlan_range"),
    ({"network_mode": "vlan", "bridge": "br-desktops", "vlan_range": "100-5000"}, "vlan_range"),
    ({"network_mode": "shared"}, "network_mode"),
], ids=["no-bridge", "no-range", "tag-0", "backwards", "tag-5000", "unknown-mode"])
def test_a_vlan_host_needs_its_bridge_and_a_valid_tag_range(api, users, fields, field):
    response = api("staff").post("/api/v1/hosts/", {**NEW_HOST, **fields}, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not Host.objects.exists()


def test_a_host_gives_every_tenant_a_network_of_its_own_by_default(api, users):
    response = api("staff").post("/api/v1/hosts/", NEW_HOST, format="json")
    assert response.status_code == 201
    assert response.json()["network_mode"] == "tenant"

    vlan = api("staff").post("/api/v1/hosts/", {
        **NEW_HOST, "name": "kvm-vlan", "network_mode": "vlan", "bridge": "br-desktops",
        "vlan_range": "100-3999"}, format="json")
    assert vlan.status_code == 201, vlan.content
    assert Host.objects.get(name="kvm-vlan").vlan_tags == range(100, 4000)


def test_drain_then_activate(api, host, run_tasks):
    client = api("staff")

    drained = client.post(f"/api/v1/hosts/{host.id}/drain/")
    assert drained.status_code == 200
    assert drained.json()["state"] == HostState.MAINTENANCE

    with run_tasks():
        activated = client.post(f"/api/v1/hosts/{host.id}/activate/")
    assert activated.status_code == 202
    host.refresh_from_db()
    assert host.state == HostState.UP


def test_the_list_shows_capacity_in_use(api, host, make_pool, run_tasks):
    with run_tasks():
        make_pool(min_ready=2, vcpus=2, memory_mb=512)

    row = api("staff").get("/api/v1/hosts/").json()["results"][0]

    assert (row["used_vcpus"], row["used_memory_mb"], row["desktop_count"]) == (4, 1024, 2)


def test_a_host_with_desktops_cannot_be_deleted(api, host, make_pool, run_tasks):
    with run_tasks():
        make_pool(min_stopped=1)
    client = api("staff")

    response = client.delete(f"/api/v1/hosts/{host.id}/")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "host_not_empty"
    assert Host.objects.filter(pk=host.pk).exists()

    with scopes_disabled():
        Desktop.objects.all().delete()
    assert client.delete(f"/api/v1/hosts/{host.id}/").status_code == 204
    assert not Host.objects.filter(pk=host.pk).exists()
