"""Django admin: every model registered, its pages open for staff across tenants."""

import pytest
from django.apps import apps
from django.contrib import admin

from tests.tenants.test_scoping import project_models


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", project_models(), ids=lambda m: m._meta.label)
def test_every_model_is_registered_and_its_changelist_opens(model, admin_client, make_pool,
                                                            host, run_tasks):
    assert model in admin.site._registry, f"{model._meta.label} is not in the admin"
    with run_tasks():
        make_pool(min_ready=1)
    url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    response = admin_client.get(url)
    assert response.status_code == 200, url


def test_pool_change_page_shows_its_desktops(admin_client, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    html = admin_client.get(f"/admin/vdi/pool/{pool.id}/change/").content.decode()
    assert "vdi-" in html


def test_non_staff_cannot_open_admin(client, users):
    from tests.conftest import PASSWORD

    client.login(username="admin", password=PASSWORD)  # a tenant admin, not platform staff
    assert client.get("/admin/vdi/desktop/").status_code == 302


def test_project_apps_are_all_covered():
    assert {m._meta.app_label for m in project_models()} == {
        "tenants", "hypervisors", "vdi", "brokers"} and apps.is_installed("vdi")


def test_host_list_shows_capacity_bars_and_the_last_error(admin_client, make_pool, host,
                                                          run_tasks):
    from hypervisors.models import Host

    with run_tasks():
        make_pool(min_ready=2, vcpus=2)
    Host.objects.filter(pk=host.pk).update(last_error="storage pool 'x' is not active")

    html = admin_client.get("/admin/hypervisors/host/").content.decode()

    assert '<meter min="0" max="64" value="4"' in html  # 16 cpus x 4.0 overcommit
    assert "storage pool &#x27;x&#x27; is not active" in html


@pytest.mark.parametrize("action,field,expected", [
    ("drain", "state", "maintenance"),
    ("disable", "enabled", False),
])
def test_host_actions(admin_client, host, action, field, expected):
    from hypervisors.models import Host

    response = admin_client.post("/admin/hypervisors/host/", {
        "action": action, "_selected_action": [str(host.pk)],
    })

    assert response.status_code == 302
    assert getattr(Host.objects.get(pk=host.pk), field) == expected


def test_adding_a_host_in_the_admin_probes_it(admin_client, run_tasks, db):
    from hypervisors.models import Host

    with run_tasks():
        response = admin_client.post("/admin/hypervisors/host/add/", {
            "name": "kvm-admin", "uri": "test:///default", "virt_type": "qemu",
            "console_address": "127.0.0.1", "enabled": "on", "cpu_overcommit": "4.0",
            "memory_overcommit": "1.0", "max_concurrent_boots": "4",
            "storage_pool": "default-pool", "network": "", "bridge": "",
        })

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Host.objects.get(name="kvm-admin").state == "up"


def test_desktop_power_actions_in_the_admin(admin_client, make_pool, host, run_tasks):
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop

    with run_tasks():
        pool = make_pool(min_ready=1)
    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)

    with run_tasks():
        response = admin_client.post("/admin/vdi/desktop/", {
            "action": "poweroff", "_selected_action": [str(desktop.pk)]}, follow=True)

    assert "Power off asked for 1 desktop(s)." in response.content.decode()
    with scopes_disabled():
        assert Desktop.objects.get(pk=desktop.pk).state == "stopped"


def test_deleting_a_pool_in_the_admin_drains_it(admin_client, make_pool, host, run_tasks):
    from vdi.models import Pool

    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks():
        response = admin_client.post(f"/admin/vdi/pool/{pool.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    from tenants.scoping import scopes_disabled

    with scopes_disabled():
        assert not Pool.objects.filter(pk=pool.pk).exists()
