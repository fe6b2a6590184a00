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
        "core", "tenants", "hypervisors", "vdi", "brokers"} and apps.is_installed("vdi")


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
            "console_address": "127.0.0.1", "vnc_listen_address": "127.0.0.1", "enabled": "on", "cpu_overcommit": "4.0",
            "memory_overcommit": "1.0", "max_concurrent_boots": "4",
            "storage_pool": "default-pool", "network_mode": "tenant", "bridge": "",
            "vlan_range": "",
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


def test_the_pool_list_shows_spares_and_its_actions_enable_and_disable(admin_client, make_pool,
                                                                      host, run_tasks):
    from vdi.models import Pool

    with run_tasks():
        pool = make_pool(min_ready=2, min_stopped=1)
    html = admin_client.get("/admin/vdi/pool/").content.decode()
    assert "<td class=\"field-spares_ready\">2 (2)</td>" in html
    assert "<td class=\"field-spares_stopped\">1 (1)</td>" in html

    admin_client.post("/admin/vdi/pool/", {"action": "disable",
                                           "_selected_action": [str(pool.pk)]})
    assert Pool._base_manager.get(pk=pool.pk).enabled is False
    response = admin_client.post("/admin/vdi/pool/", {"action": "enable",
                                                      "_selected_action": [str(pool.pk)]},
                                 follow=True)
    assert Pool._base_manager.get(pk=pool.pk).enabled is True
    assert "1 pool(s) enabled." in response.content.decode()


def test_the_host_page_lists_its_desktops_read_only(admin_client, make_pool, host, run_tasks):
    from tenants.scoping import scopes_disabled
    from vdi.models import Desktop

    with run_tasks():
        make_pool(name="Office", min_ready=2)
    with scopes_disabled():
        names = list(Desktop.objects.values_list("name", flat=True))

    html = admin_client.get(f"/admin/hypervisors/host/{host.pk}/change/").content.decode()

    assert "Desktops (the newest 50)" in html
    for name in names:
        assert name in html
    assert "Office" in html and "acme" in html  # which tenant and pool each serves
    assert 'name="desktops-0-state"' not in html  # read-only: no inputs


def test_desktop_inlines_show_at_most_the_newest_fifty(admin_client, make_pool, host,
                                                       run_tasks):
    from tenants.adminutils import LimitedInlineFormSet

    with run_tasks():
        pool = make_pool(min_stopped=3, max_desktops=5)
    LimitedInlineFormSet.max_shown, previous = 2, LimitedInlineFormSet.max_shown
    try:
        html = admin_client.get(f"/admin/vdi/pool/{pool.pk}/change/").content.decode()
    finally:
        LimitedInlineFormSet.max_shown = previous
    assert 'name="desktops-TOTAL_FORMS" value="2"' in html


def test_reconcile_now_checks_the_host(admin_client, host, run_tasks):
    from hypervisors.models import Host

    Host.objects.filter(pk=host.pk).update(last_checked_at=None)
    with run_tasks():
        response = admin_client.post("/admin/hypervisors/host/", {
            "action": "refresh", "_selected_action": [str(host.pk)]}, follow=True)
    assert "1 host(s) being checked." in response.content.decode()
    assert Host.objects.get(pk=host.pk).last_checked_at is not None


def test_sessions_end_from_the_admin(admin_client, make_pool, host, run_tasks, users):
    from brokers.models import Session
    from brokers.services import session_connect
    from tenants.scoping import scopes_disabled, tenant_scope

    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks(), tenant_scope(pool.tenant):
        session = session_connect(user=users["member"], pool=pool).session

    with run_tasks():
        response = admin_client.post("/admin/brokers/session/", {
            "action": "end", "_selected_action": [str(session.pk)]}, follow=True)

    assert "1 session(s) ended." in response.content.decode()
    with scopes_disabled():
        ended = Session.objects.get(pk=session.pk)
    assert (ended.state, ended.end_reason) == ("ended", "admin")


@pytest.mark.parametrize("action,status", [("suspend", "suspended"), ("resume", "active")])
def test_tenants_are_suspended_and_resumed_from_the_admin(admin_client, tenant, action, status):
    from tenants.models import Tenant

    if action == "resume":
        Tenant.objects.filter(pk=tenant.pk).update(status="suspended")
    admin_client.post("/admin/tenants/tenant/", {"action": action,
                                                 "_selected_action": [str(tenant.pk)]})
    assert Tenant.objects.get(pk=tenant.pk).status == status


@pytest.mark.parametrize("model_label", ["vdi.Operation", "tenants.AuditEvent"])
def test_operations_and_the_audit_trail_are_read_only(admin_client, model_label, make_pool,
                                                      host, run_tasks):
    from django.apps import apps

    from tenants.scoping import scopes_disabled

    with run_tasks():
        make_pool(min_ready=1)  # an operation, and the pool's creation in the trail
    model = apps.get_model(model_label)
    with scopes_disabled():
        row = model._base_manager.first()
    url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"

    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url + "add/").status_code == 403
    page = admin_client.get(f"{url}{row.pk}/change/").content.decode()
    assert 'name="_save"' not in page
