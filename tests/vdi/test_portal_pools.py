"""The portal's pool pages for tenant owners and admins: list, create, edit (resize), delete."""

import pytest
from django.test import Client
from django.utils import timezone

from brokers.models import Session
from tenants.scoping import scopes_disabled, tenant_scope
from vdi.models import Desktop, Image, Pool
from vdi.services import pool_create

LIST = "/t/acme/pools/"
NEW = "/t/acme/pools/new/"


@pytest.fixture
def form_data(image):
    """A complete, valid POST for the pool form (unchecked boxes are simply left out)."""

    def data(**changes):
        values = {
            "name": "Office", "description": "", "image": str(image.pk), "kind": "floating",
            "protocol": "spice", "vcpus": "1", "memory_mb": "256", "min_ready": "0",
            "min_stopped": "0", "max_desktops": "5", "max_per_user": "1",
            "idle_timeout_s": "", "max_session_s": "", "on_logoff": "recycle",
            "ticket_ttl_s": "", "entitle_all_members": "on", "enabled": "on",
        }
        values.update(changes)
        return {name: value for name, value in values.items() if value is not None}

    return data


def pools():
    with scopes_disabled():
        return list(Pool.objects.order_by("name"))


def spares(pool):
    with scopes_disabled():
        return sorted(Desktop.objects.filter(pool=pool, assigned_user__isnull=True)
                      .values_list("state", flat=True))


def edit_url(pool):
    return f"/t/acme/pools/{pool.id}/edit/"


def delete_url(pool):
    return f"/t/acme/pools/{pool.id}/delete/"


# --- list -----------------------------------------------------------------------------------
def test_admin_lists_every_pool_with_its_sizes(logged_in, make_pool):
    make_pool(name="Office", min_ready=2, min_stopped=1, max_desktops=7)
    make_pool(name="Secret", entitle_all_members=False, enabled=False)
    html = logged_in("admin").get(LIST).content.decode()
    assert "Office" in html and "Secret" in html  # admins see pools members may not
    office = next(pool for pool in pools() if pool.name == "Office")
    row = html[html.index(f'data-pool="{office.pk}"'):]
    row = row[:row.index("</tr>")]
    assert '<span data-field="ready">0</span> / 2' in row
    assert '<span data-field="stopped">0</span> / 1' in row
    assert '<span data-field="desktops">0</span> (7)' in row and "debian v1" in row
    assert "Floating (non-persistent)" in html and "SPICE" in html
    assert f'href="{NEW}"' in html and "New pool" in html
    for pool in pools():
        assert f'href="{edit_url(pool)}"' in html and f'href="{delete_url(pool)}"' in html
    assert "Being deleted" not in html


def test_owner_and_staff_may_manage_pools(logged_in, make_pool):
    make_pool()
    for role in ("owner", "staff"):
        assert logged_in(role).get(LIST).status_code == 200


def test_the_list_shows_desktops_off_the_current_image_and_pools_being_deleted(
        logged_in, make_pool, host, run_tasks, tenant):
    with run_tasks():
        pool = make_pool(min_stopped=3)
    with scopes_disabled():
        newer = Image.objects.create(name="debian", version=2, base_volume="debian-v2.qcow2",
                                     disk_gb=1)
        Pool.objects.filter(pk=pool.pk).update(image=newer)  # the roll-out has not started
        Desktop.objects.filter(pk=Desktop.objects.filter(pool=pool).first().pk).update(
            image=newer)
    html = logged_in("admin").get(LIST).content.decode()
    assert '<span data-field="desktops">3</span> (5)' in html
    assert "1 on the current image" in html and "debian v2" in html

    with scopes_disabled():
        Pool.objects.filter(pk=pool.pk).update(deleting_since=timezone.now(), enabled=False)
    html = logged_in("admin").get(LIST).content.decode()
    assert "Being deleted" in html and f'href="{edit_url(pool)}"' not in html


def test_the_nav_links_to_pools_for_admins_only(logged_in, make_pool):
    make_pool()
    admin_page = logged_in("admin").get("/t/acme/").content.decode()
    assert f'href="{LIST}"' in admin_page
    assert 'aria-current="page">Pools' in logged_in("admin").get(LIST).content.decode()

    member_page = logged_in("member").get("/t/acme/").content.decode()
    assert f'href="{LIST}"' not in member_page and ">Pools</a>" not in member_page


# --- create ---------------------------------------------------------------------------------
def test_the_new_pool_form_has_labelled_fields_csrf_and_only_visible_images(
        logged_in, image, other_tenant, tenant):
    with scopes_disabled():
        Image.objects.create(tenant=other_tenant, name="globex-only", base_volume="g.qcow2")
        Image.objects.create(tenant=tenant, name="acme-own", base_volume="a.qcow2")
    response = logged_in("admin").get(NEW)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in html
    for field in ("name", "image", "kind", "min_ready", "min_stopped", "max_desktops",
                  "entitle_all_members", "enabled"):
        assert f'<label for="id_{field}"' in html, field
    assert "debian v1" in html and "acme-own v1" in html and "globex-only" not in html


def test_posting_without_the_csrf_token_is_refused(users, image, form_data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["admin"])
    assert client.post(NEW, form_data()).status_code == 403
    assert pools() == []


def test_admin_creates_a_pool_and_its_spares_are_provisioned(
        logged_in, form_data, host, run_tasks, users):
    client = logged_in("admin")
    with run_tasks():
        response = client.post(NEW, form_data(name="Design", min_ready="2", min_stopped="1",
                                              description="CAD workstations"))
    assert response.status_code == 302 and response.headers["Location"] == LIST
    [pool] = pools()
    assert (pool.name, pool.description, pool.min_ready, pool.min_stopped) == (
        "Design", "CAD workstations", 2, 1)
    assert pool.tenant.slug == "acme" and pool.entitle_all_members and pool.enabled
    assert spares(pool) == ["running", "running", "stopped"]

    html = client.get(LIST).content.decode()
    assert "Pool “Design” created; its spares are being prepared." in html
    assert (f'<tr id="pool-{pool.pk}" data-pool="{pool.pk}"' in html
            and '<span data-field="ready">2</span> / 2' in html
            and '<span data-field="stopped">1</span> / 1' in html
            and '<span data-field="desktops">3</span>' in html)


def test_unchecked_boxes_are_saved_as_off(logged_in, form_data):
    logged_in("admin").post(NEW, form_data(entitle_all_members=None, enabled=None))
    [pool] = pools()
    assert not pool.entitle_all_members and not pool.enabled


def test_spares_beyond_max_desktops_are_shown_next_to_the_field_and_nothing_is_saved(
        logged_in, form_data, host, run_tasks):
    with run_tasks():
        response = logged_in("admin").post(NEW, form_data(min_ready="3", min_stopped="3",
                                                          max_desktops="5"))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<ul class="errorlist" id="id_max_desktops_error">' in html
    assert "Must be at least min_ready + min_stopped." in html
    assert 'aria-invalid="true"' in html
    assert 'value="3"' in html  # what was typed is kept
    assert pools() == []
    with scopes_disabled():
        assert Desktop.objects.count() == 0


def test_a_duplicate_name_is_shown_next_to_the_name(logged_in, form_data, make_pool):
    make_pool(name="Office", description="the first")
    response = logged_in("admin").post(NEW, form_data(name="Office", description="second"))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<ul class="errorlist" id="id_name_error">' in html
    assert "already has a pool with this name" in html
    assert [p.description for p in pools()] == ["the first"]


def test_the_same_name_in_another_tenant_is_fine(logged_in, form_data, other_tenant, image,
                                                users):
    with tenant_scope(other_tenant):
        pool_create(tenant=other_tenant, actor=users["outsider"], name="Office", image=image)
    assert logged_in("admin").post(NEW, form_data(name="Office")).status_code == 302
    assert len(pools()) == 2


def test_another_tenants_image_cannot_be_chosen(logged_in, form_data, other_tenant):
    with scopes_disabled():
        theirs = Image.objects.create(tenant=other_tenant, name="globex-only",
                                      base_volume="g.qcow2")
    response = logged_in("admin").post(NEW, form_data(image=str(theirs.pk)))
    assert response.status_code == 200
    assert '<ul class="errorlist" id="id_image_error">' in response.content.decode()
    assert pools() == []


def test_a_suspended_tenant_gets_the_reason_at_the_top_of_the_form(logged_in, form_data,
                                                                   tenant):
    tenant.status = "suspended"
    tenant.save()
    response = logged_in("admin").post(NEW, form_data())
    html = response.content.decode()
    assert response.status_code == 200
    assert 'role="alert"><p>This organisation is suspended.</p>' in html
    assert pools() == []


# --- edit -----------------------------------------------------------------------------------
def test_the_edit_form_shows_the_pools_values(logged_in, make_pool):
    pool = make_pool(name="Office", min_stopped=2, max_desktops=9)
    html = logged_in("admin").get(edit_url(pool)).content.decode()
    assert 'value="Office"' in html and 'value="9"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_admin_resizes_a_pool_and_the_autoscaler_applies_it(
        logged_in, make_pool, form_data, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    assert spares(pool) == ["running"]
    client = logged_in("admin")

    with run_tasks():
        response = client.post(edit_url(pool), form_data(min_ready="2", min_stopped="1",
                                                         max_desktops="6"))
    assert response.status_code == 302 and response.headers["Location"] == LIST
    pool.refresh_from_db()
    assert (pool.min_ready, pool.min_stopped, pool.max_desktops) == (2, 1, 6)
    assert spares(pool) == ["running", "running", "stopped"]
    assert "Pool “Office” saved" in client.get(LIST).content.decode()

    with run_tasks():
        client.post(edit_url(pool), form_data(min_ready="0", min_stopped="1", max_desktops="6"))
    assert spares(pool) == ["stopped"]  # surplus running spares trimmed


def test_renaming_and_disabling_a_pool(logged_in, make_pool, form_data):
    pool = make_pool(name="Office")
    response = logged_in("admin").post(edit_url(pool), form_data(name="Back office",
                                                                 enabled=None))
    assert response.status_code == 302
    pool.refresh_from_db()
    assert pool.name == "Back office" and not pool.enabled


def test_an_invalid_edit_changes_nothing(logged_in, make_pool, form_data):
    pool = make_pool(name="Office", min_ready=1, max_desktops=5)
    make_pool(name="Lab")
    client = logged_in("admin")

    response = client.post(edit_url(pool), form_data(min_ready="4", min_stopped="4"))
    assert "Must be at least min_ready + min_stopped." in response.content.decode()
    response = client.post(edit_url(pool), form_data(name="Lab"))
    html = response.content.decode()
    assert "already has a pool with this name" in html
    assert "Edit pool “Office”" in html  # the title keeps the saved name

    pool.refresh_from_db()
    assert (pool.name, pool.min_ready, pool.min_stopped) == ("Office", 1, 0)


def test_editing_a_pool_being_deleted_is_refused_at_the_top_of_the_form(
        logged_in, make_pool, form_data):
    pool = make_pool(name="Office", min_ready=0)
    with scopes_disabled():
        Pool.objects.filter(pk=pool.pk).update(deleting_since=timezone.now(), enabled=False)
    client = logged_in("admin")
    assert "it can no longer be changed" in client.get(edit_url(pool)).content.decode()

    response = client.post(edit_url(pool), form_data(min_ready="1"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'role="alert"><p>This pool is being deleted.</p>' in html
    pool.refresh_from_db()
    assert pool.min_ready == 0


# --- delete ---------------------------------------------------------------------------------
def test_delete_asks_first_then_the_pool_and_its_desktops_go(
        logged_in, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(name="Office", min_ready=1, min_stopped=1)
    client = logged_in("member")
    with run_tasks():
        client.post(f"/t/acme/pools/{pool.id}/connect/")  # a live session on a desktop
    client = logged_in("admin")

    with scopes_disabled():
        assert Desktop.objects.filter(pool=pool).count() == 3  # the taken spare was replaced

    page = client.get(delete_url(pool))
    html = page.content.decode()
    assert page.status_code == 200
    assert "3 desktops" in html and "1 live session" in html
    assert "cannot be undone" in html and 'name="csrfmiddlewaretoken"' in html
    assert pools() == [pool]  # asking changes nothing

    with run_tasks():
        response = client.post(delete_url(pool))
    assert response.status_code == 302 and response.headers["Location"] == LIST
    assert pools() == []
    with scopes_disabled():
        assert Desktop.objects.count() == 0
    html = client.get(LIST).content.decode()
    assert "Pool “Office” is being deleted" in html
    with scopes_disabled():
        assert Session.objects.count() == 0  # ended, then removed with the pool


def test_a_pool_being_deleted_stays_listed_until_its_desktops_are_gone(
        logged_in, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(name="Office", min_stopped=1)
    client = logged_in("admin")
    client.post(delete_url(pool))  # no worker ran
    pool.refresh_from_db()
    assert pool.is_deleting and not pool.enabled
    assert "Being deleted" in client.get(LIST).content.decode()
    assert "already being deleted" in client.get(delete_url(pool)).content.decode()


# --- who may see what -----------------------------------------------------------------------
def test_members_get_403_on_every_pool_page(logged_in, make_pool, form_data):
    pool = make_pool(name="Office", min_ready=0)
    client = logged_in("member")
    for url in (LIST, NEW, edit_url(pool), delete_url(pool)):
        assert client.get(url).status_code == 403, url
    assert client.post(NEW, form_data(name="Mine")).status_code == 403
    assert client.post(edit_url(pool), form_data(name="Renamed")).status_code == 403
    assert client.post(delete_url(pool)).status_code == 403
    assert [(p.name, p.is_deleting) for p in pools()] == [("Office", False)]


def test_an_admin_of_another_tenant_gets_404(logged_in, make_pool, form_data):
    pool = make_pool(name="Office")
    client = logged_in("outsider")
    for url in (LIST, NEW, edit_url(pool), delete_url(pool)):
        assert client.get(url).status_code == 404, url
    assert client.post(NEW, form_data(name="Theirs")).status_code == 404
    assert client.post(delete_url(pool)).status_code == 404
    assert [(p.name, p.is_deleting) for p in pools()] == [("Office", False)]


def test_another_tenants_pool_is_404_under_this_tenant(logged_in, other_tenant, image, users,
                                                       form_data):
    with tenant_scope(other_tenant):
        theirs = pool_create(tenant=other_tenant, actor=users["outsider"], name="Globex pool",
                             image=image)
    client = logged_in("admin")
    assert "Globex pool" not in client.get(LIST).content.decode()
    assert client.get(edit_url(theirs)).status_code == 404
    assert client.post(edit_url(theirs), form_data(name="Hijacked")).status_code == 404
    assert client.get(delete_url(theirs)).status_code == 404
    assert client.post(delete_url(theirs)).status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "Globex pool" and not theirs.is_deleting


def test_pool_pages_need_login(client, tenant):
    response = client.get(LIST)
    assert response.status_code == 302 and response.headers["Location"].startswith(
        "/accounts/login/")
