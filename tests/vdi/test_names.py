"""Names libvirt (and line-based files) cannot carry: refused where people type them, made
safe where they are used."""

from __future__ import annotations

import libvirt
import pytest

from tenants.models import Tenant
from tenants.scoping import scopes_disabled
from tests.api.test_slice import assert_error
from tests.vdi.test_portal_pools import NEW, form_data, pools  # noqa: F401 (a fixture)
from vdi.choices import DesktopState
from vdi.models import Desktop, Image, Pool
from core.naming import single_line, validate_printable

POOLS = "/api/v1/tenants/acme/pools/"
UNPRINTABLE = ["Office\nB", "Office\rB", "Tab\there", "nul\x00", "bell\x07", "del\x7f",
               "zero\u200bwidth", "rtl\u202eoverride", "line\u2028separator", "nel\x85x"]
ACCEPTED = ['Sales "EMEA"', "a; b", "[virt-viewer]", "Büro Zürich", "東京", "=1+1",
            "O'Brien & Co. <R&D>"]


def pool_body(image, name):
    return {"name": name, "image": str(image.id), "memory_mb": 256, "max_desktops": 3}


@pytest.mark.parametrize("name", UNPRINTABLE)
def test_the_api_refuses_a_pool_name_with_control_characters(api, image, name):
    response = api("admin").post(POOLS, pool_body(image, name), format="json")

    error = assert_error(response, 400)
    assert "name" in error["details"] and "control characters" in str(error["details"])
    assert pools() == []


@pytest.mark.parametrize("name", ACCEPTED)
def test_quotes_brackets_and_other_scripts_are_fine(api, image, name):
    response = api("admin").post(POOLS, pool_body(image, name), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == name


def test_renaming_a_pool_to_an_unprintable_name_changes_nothing(api, make_pool):
    pool = make_pool(name="Office")

    response = api("admin").patch(f"{POOLS}{pool.id}/", {"name": "Office\n[x]"}, format="json")

    assert_error(response, 400)
    pool.refresh_from_db()
    assert pool.name == "Office"


def test_the_portal_form_refuses_it_too(logged_in, form_data):  # noqa: F811
    response = logged_in("admin").post(NEW, form_data(name="Office\tB"))
    assert response.status_code == 200
    assert "control characters" in response.content.decode()
    assert pools() == []


def test_images_and_organisations_refuse_it_too(api, image):
    staff = api("staff")
    body = {"name": "debian\n12", "version": 1, "base_volume": "d.qcow2"}
    assert_error(staff.post("/api/v1/images/", body, format="json"), 400)
    with scopes_disabled():
        assert not Image.objects.filter(name__startswith="debian\n").exists()

    assert_error(staff.post("/api/v1/tenants/", {"slug": "initech", "name": "Initech\r\nX"},
                            format="json"), 400)
    assert not Tenant.objects.filter(slug="initech").exists()


def test_the_validator_names_what_it_found():
    with pytest.raises(Exception) as error:
        validate_printable("a\nb\tc")
    assert "U+0009, U+000A" in str(error.value)
    validate_printable("Büro ☕ [x]; \"y\"")  # printable: no error


def test_a_stored_unprintable_name_still_provisions_with_a_one_line_title(make_pool, host,
                                                                         run_tasks, tenant):
    """A pool named before the rule: its desktops' domain title is made one line, so
    libvirt (which refuses a title with a newline) defines them."""
    pool = make_pool(min_ready=0)
    with scopes_disabled():
        Pool.objects.filter(pk=pool.pk).update(name="Office\n2nd floor\t(east)", min_ready=1)
    pool.refresh_from_db()
    from vdi.services import pool_autoscale

    with run_tasks(), scopes_disabled():
        pool_autoscale(pool=pool)

    with scopes_disabled():
        desktop = Desktop.objects.get(pool=pool)
    assert desktop.state == DesktopState.RUNNING, desktop.last_error
    conn = libvirt.open("test:///default")
    try:
        title = conn.lookupByName(desktop.name).metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None)
    finally:
        conn.close()
    assert title == f"Office 2nd floor (east) / {desktop.name}"


def test_single_line_keeps_printable_text_and_folds_the_rest():
    assert single_line("  Office\r\n\t[x];  \"y\" \u2028 z\x00 ") == 'Office [x]; "y" z'
    assert single_line("Büro ☕") == "Büro ☕"
