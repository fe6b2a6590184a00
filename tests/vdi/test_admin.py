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
