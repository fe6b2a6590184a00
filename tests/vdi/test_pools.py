"""Pools through their life: spares kept and trimmed, growth bounded by capacity, image
roll-outs, deletion, and the per-user limit. Tasks run eagerly on the simulated host."""

from __future__ import annotations

import libvirt
import pytest

from brokers.models import Session
from hypervisors.models import Host
from tenants.scoping import scopes_disabled
from vdi.choices import DesktopState, OperationKind
from vdi.models import Desktop, Image, Operation, Pool
from vdi.services import desktop_power, image_publish, image_save, pool_autoscale, pool_update


def pool_desktops(pool: Pool) -> list[Desktop]:
    with scopes_disabled():
        return list(Desktop.objects.filter(pool=pool).order_by("created_at"))


def states(pool: Pool) -> dict[str, int]:
    counts: dict[str, int] = {}
    for desktop in pool_desktops(pool):
        counts[desktop.state] = counts.get(desktop.state, 0) + 1
    return counts


def autoscale(pool: Pool, run_tasks) -> None:
    with run_tasks(), scopes_disabled():
        pool_autoscale(pool=Pool.objects.get(pk=pool.pk))


@pytest.fixture
def libvirt_conn():
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def domain_exists(conn, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def test_the_autoscaler_converges_and_trims_surplus(make_pool, host, run_tasks, users,
                                                    libvirt_conn):
    with run_tasks():
        pool = make_pool(min_ready=3, min_stopped=2, max_desktops=10)
    assert states(pool) == {DesktopState.RUNNING: 3, DesktopState.STOPPED: 2}
    autoscale(pool, run_tasks)
    assert len(pool_desktops(pool)) == 5  # already there: nothing more

    before = {d.name for d in pool_desktops(pool)}
    with run_tasks(), scopes_disabled():
        pool_update(pool=pool, actor=users["admin"], min_ready=1, min_stopped=3)

    # One surplus running spare was shut down to become the missing stopped one, the other
    # deleted, domain and all.
    assert states(pool) == {DesktopState.RUNNING: 1, DesktopState.STOPPED: 3}
    gone = before - {d.name for d in pool_desktops(pool)}
    assert len(gone) == 1 and not domain_exists(libvirt_conn, gone.pop())

    with run_tasks(), scopes_disabled():
        pool_update(pool=pool, actor=users["admin"], min_ready=0, min_stopped=0)
    assert pool_desktops(pool) == []


def test_assigned_desktops_are_never_trimmed(make_pool, host, run_tasks, users, api):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks():
        response = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200
    with run_tasks(), scopes_disabled():
        pool_update(pool=pool, actor=users["admin"], min_ready=0)

    assert [d.assigned_user.username for d in pool_desktops(pool)] == ["member"]


def test_growth_is_bounded_by_what_the_hosts_can_take(make_pool, host, run_tasks):
    Host.objects.filter(pk=host.pk).update(cpus=2, cpu_overcommit=1.0)  # room for 2 vCPUs

    with run_tasks():
        pool = make_pool(min_ready=5, max_desktops=10, vcpus=1)

    assert states(pool) == {DesktopState.RUNNING: 2}
    with scopes_disabled():
        assert not Operation.objects.filter(pool=pool, state="failed").exists()

    Host.objects.filter(pk=host.pk).update(cpus=3)  # one more fits: the next run takes it
    autoscale(pool, run_tasks)
    assert states(pool) == {DesktopState.RUNNING: 3}


def test_a_connect_when_no_host_has_room_is_refused_at_once(make_pool, host, run_tasks, api):
    Host.objects.filter(pk=host.pk).update(cpus=1, cpu_overcommit=1.0)
    with run_tasks():
        pool = make_pool(min_ready=1, kind="dedicated")  # the only vCPU goes to the spare
    with run_tasks():
        first = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
        second = api("admin").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")

    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "no_capacity"


# --- image versions -------------------------------------------------------------------------
@pytest.fixture
def image_v2(image):
    return image_save(image=Image(name=image.name, version=2, base_volume="debian-v2.qcow2",
                                  disk_gb=1, default_memory_mb=512))


def test_publishing_rolls_floating_pools_onto_the_new_version(make_pool, host, run_tasks,
                                                              image, image_v2, api):
    with run_tasks():
        floating = make_pool(min_ready=2, min_stopped=1)
        dedicated = make_pool(name="Engineering", kind="dedicated", min_ready=1)
    with run_tasks():
        assert api("member").post(
            f"/api/v1/tenants/acme/pools/{dedicated.id}/connect/").status_code == 200

    with run_tasks():
        rolled = image_publish(image=image_v2)
    assert {p.id for p in rolled} == {floating.id, dedicated.id}

    for _ in range(3):  # running spares go a few at a time
        autoscale(floating, run_tasks)
    assert {d.image_id for d in pool_desktops(floating)} == {image_v2.id}
    assert states(floating) == {DesktopState.RUNNING: 2, DesktopState.STOPPED: 1}
    body = api("admin").get(f"/api/v1/tenants/acme/pools/{floating.id}/").json()
    assert (body["desktop_count"], body["desktops_on_image"]) == (3, 3)

    autoscale(dedicated, run_tasks)
    mine = next(d for d in pool_desktops(dedicated) if d.assigned_user_id)
    assert mine.image_id == image.id  # dedicated desktops keep theirs...
    body = api("admin").get(f"/api/v1/tenants/acme/pools/{dedicated.id}/").json()
    assert body["desktops_on_image"] < body["desktop_count"]

    with run_tasks(), scopes_disabled():
        desktop_power(desktop=mine, kind=OperationKind.RESET, actor=None)
    with scopes_disabled():
        assert Desktop.objects.get(pk=mine.pk).image_id == image_v2.id  # ...until reset


def test_publishing_leaves_other_images_and_newer_pools_alone(make_pool, host, run_tasks,
                                                              image, image_v2):
    with run_tasks():
        on_v2 = make_pool(image=image_v2)
    other = image_save(image=Image(name="windows", version=1, base_volume="w.qcow2"))

    assert image_publish(image=image) == []
    assert image_publish(image=other) == []
    on_v2.refresh_from_db()
    assert on_v2.image_id == image_v2.id


def test_publish_through_the_api_is_for_staff(api, image_v2, make_pool, run_tasks, host):
    with run_tasks():
        pool = make_pool()
    assert api("admin").post(f"/api/v1/images/{image_v2.id}/publish/").status_code == 403

    response = api("staff").post(f"/api/v1/images/{image_v2.id}/publish/")

    assert response.status_code == 200
    assert response.json()["pools"] == [str(pool.id)]


# --- deleting a pool ------------------------------------------------------------------------
def test_deleting_a_pool_leaves_nothing_behind(make_pool, host, run_tasks, api, libvirt_conn):
    with run_tasks():
        pool = make_pool(min_ready=2, min_stopped=1)
    with run_tasks():
        session = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    names = [d.name for d in pool_desktops(pool)]
    volumes = [d.volume_name for d in pool_desktops(pool)]
    assert len(names) == 4 and all(domain_exists(libvirt_conn, name) for name in names)

    assert api("member").delete(f"/api/v1/tenants/acme/pools/{pool.id}/").status_code == 403
    with run_tasks():
        response = api("admin").delete(f"/api/v1/tenants/acme/pools/{pool.id}/")

    assert response.status_code == 202
    assert response.json()["deleting_since"] is not None
    with scopes_disabled():
        assert not Pool.objects.filter(pk=pool.pk).exists()
        assert not Desktop.objects.filter(name__in=names).exists()
        assert not Session.objects.filter(pk=session["session"]).exists()
        assert not Operation.objects.filter(pool_id=pool.pk).exists()
    assert not any(domain_exists(libvirt_conn, name) for name in names)
    left = set(libvirt_conn.storagePoolLookupByName("default-pool").listVolumes())
    assert not left & set(volumes)


def test_a_pool_being_deleted_refuses_connects_and_changes(make_pool, host, api, users):
    pool = make_pool(min_ready=0)
    admin = api("admin")
    assert admin.delete(f"/api/v1/tenants/acme/pools/{pool.id}/").status_code == 202  # no worker

    connect = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")
    assert connect.status_code == 404  # members no longer see it
    change = admin.patch(f"/api/v1/tenants/acme/pools/{pool.id}/", {"min_ready": 1},
                         format="json")
    assert change.status_code == 409
    assert change.json()["error"]["code"] == "pool_deleting"
    listed = admin.get("/api/v1/tenants/acme/pools/").json()["results"]
    assert listed[0]["deleting_since"] is not None


# --- per-user limit -------------------------------------------------------------------------
def test_a_dedicated_desktop_that_broke_is_not_silently_replaced(make_pool, host, run_tasks, api):
    with run_tasks():
        pool = make_pool(kind="dedicated", min_ready=2)
    with run_tasks():
        first = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/").json()
    with scopes_disabled():
        Desktop.objects.filter(pk=first["desktop"]).update(state=DesktopState.ERROR)

    with run_tasks():
        again = api("member").post(f"/api/v1/tenants/acme/pools/{pool.id}/connect/")

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "max_per_user"
