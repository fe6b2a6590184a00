"""The portal: login, tenant dashboard, Connect, ticket page, .vv download, end."""

from django.contrib.auth import get_user_model

from brokers.models import Session
from tenants.scoping import scopes_disabled
from tests.conftest import PASSWORD


def test_login_page_and_redirect_to_the_only_tenant(client, users, tenant):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "member", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").headers["Location"] == "/t/acme/"


def test_wrong_password_shows_an_error(client, users):
    response = client.post("/accounts/login/", {"username": "member", "password": "wrong"})
    assert response.status_code == 200 and b"didn't match" in response.content


def test_pages_need_login(client, tenant):
    response = client.get("/t/acme/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/accounts/login/")


def test_dashboard_lists_entitled_pools_with_connect(logged_in, make_pool):
    make_pool(name="Office")
    make_pool(name="Secret", entitle_all_members=False)
    html = logged_in("member").get("/t/acme/").content.decode()
    assert "Office" in html and "Secret" not in html and "Connect" in html


def test_non_members_get_404_on_tenant_pages(logged_in, make_pool):
    pool = make_pool()
    client = logged_in("outsider")
    assert client.get("/t/acme/").status_code == 404
    assert client.post(f"/t/acme/pools/{pool.id}/connect/").status_code == 404
    with scopes_disabled():
        assert Session.objects.count() == 0


def test_tenant_switcher_lists_every_tenant_of_the_user(logged_in, users, other_tenant):
    from tenants.services import membership_add

    membership_add(tenant=other_tenant, user=users["member"])
    client = logged_in("member")
    assert client.get("/").status_code == 200  # two tenants: a choice, not a redirect
    html = client.get("/t/acme/").content.decode()
    assert "/t/globex/" in html and "/t/acme/" in html


def test_connect_shows_the_ticket_then_the_vv_downloads(logged_in, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    client = logged_in("member")
    with run_tasks():
        response = client.post(f"/t/acme/pools/{pool.id}/connect/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Connection details" in html and 'id="ticket-password"' in html
    assert "simulated host" in html
    with scopes_disabled():
        session = Session.objects.get()
    assert session.state == "ready"
    with run_tasks():
        vv = client.get(f"/t/acme/sessions/{session.id}/console.vv")
    assert vv.status_code == 200 and vv["Content-Type"] == "application/x-virt-viewer"
    assert vv.content.startswith(b"[virt-viewer]\n")
    assert "attachment" in vv["Content-Disposition"]


def test_connect_without_a_spare_shows_preparing(logged_in, make_pool, host):
    pool = make_pool(min_ready=0)
    response = logged_in("member").post(f"/t/acme/pools/{pool.id}/connect/", follow=True)
    html = response.content.decode()
    with scopes_disabled():
        session = Session.objects.get()
    assert response.redirect_chain == [(f"/t/acme/sessions/{session.id}/", 302)]
    assert response.status_code == 200 and "Preparing your desktop" in html
    assert f'hx-get="/t/acme/sessions/{session.id}/status/"' in html
    assert 'data-field="connect-state">Pending<' in html
    assert '<noscript><meta http-equiv="refresh"' in html  # without JavaScript too


def test_connect_to_a_disabled_pool_explains_why(logged_in, make_pool, host):
    pool = make_pool(enabled=False)
    response = logged_in("member").post(f"/t/acme/pools/{pool.id}/connect/", follow=True)
    assert b"This pool is disabled." in response.content
    with scopes_disabled():
        assert Session.objects.count() == 0


def test_end_session_from_the_portal(logged_in, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=1)
    client = logged_in("member")
    with run_tasks():
        client.post(f"/t/acme/pools/{pool.id}/connect/")
    with scopes_disabled():
        session = Session.objects.get()
    with run_tasks():
        response = client.post(f"/t/acme/sessions/{session.id}/end/")
    assert response.status_code == 302
    session.refresh_from_db()
    assert session.state == "ended"


def test_another_users_session_is_404(logged_in, make_pool, host, run_tasks, users):
    with run_tasks():
        pool = make_pool(min_ready=1)
    with run_tasks():
        logged_in("member").post(f"/t/acme/pools/{pool.id}/connect/")
    with scopes_disabled():
        session = Session.objects.get()
    client = logged_in("admin")
    assert client.get(f"/t/acme/sessions/{session.id}/").status_code == 404
    assert client.get(f"/t/acme/sessions/{session.id}/console.vv").status_code == 404


def test_logout(logged_in):
    client = logged_in("member")
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/t/acme/").status_code == 302
    assert get_user_model().objects.filter(username="member").exists()


def test_a_banner_says_when_hosts_are_simulated(logged_in, host):
    client = logged_in("member")
    assert b"Simulated host" in client.get("/t/acme/").content
    host.uri = "qemu+tls://kvm1.example.com/system"
    host.save()
    assert b"Simulated host" not in client.get("/t/acme/").content


def test_the_banner_shows_only_while_no_real_host_is_up(client, host, db):
    from hypervisors.models import Host

    assert b"Simulated host" in client.get("/accounts/login/").content  # before logging in too
    real = Host.objects.create(name="kvm-1", uri="qemu+tls://kvm1.example.com/system",
                               console_address="kvm1.example.com", state="down")
    assert b"Simulated host" in client.get("/accounts/login/").content  # down: not in use
    Host.objects.filter(pk=real.pk).update(state="up")
    assert b"Simulated host" not in client.get("/accounts/login/").content
    Host.objects.all().update(state="down")
    assert b"Simulated host" not in client.get("/accounts/login/").content  # none up at all


def test_power_actions_on_member_desktop_from_the_dashboard(logged_in, member_desktop, run_tasks):
    from vdi.models import Desktop

    client = logged_in("member")
    assert 'action="/t/acme/desktops/' in client.get("/t/acme/").content.decode()

    with run_tasks():
        response = client.post(f"/t/acme/desktops/{member_desktop.id}/poweroff/", follow=True)

    assert response.status_code == 200
    assert "Power off" in response.content.decode()
    with scopes_disabled():
        assert Desktop.objects.get(pk=member_desktop.pk).state == "stopped"
    refused = client.post(f"/t/acme/desktops/{member_desktop.id}/shutdown/", follow=True)
    assert "Cannot shutdown a desktop that is stopped" in refused.content.decode()


def test_power_actions_on_someone_elses_desktop_are_404(logged_in, member_desktop, make_user,
                                                       tenant):
    from tenants.choices import Role
    from tenants.services import membership_add

    other = make_user("other")
    membership_add(tenant=tenant, user=other, role=Role.MEMBER)
    client = logged_in("member")
    client.logout()
    client.force_login(other)

    assert client.post(f"/t/acme/desktops/{member_desktop.id}/poweroff/").status_code == 404
    assert client.post(f"/t/acme/desktops/{member_desktop.id}/delete/").status_code == 404


def test_a_desktops_error_is_shown_in_plain_words(logged_in, member_desktop):
    """The member reads that it broke; libvirt's own words are for platform staff."""
    from vdi.models import Desktop

    with scopes_disabled():
        Desktop.objects.filter(pk=member_desktop.pk).update(
            state="error", last_error="image base volume 'x.qcow2' is missing")

    html = logged_in("member").get("/t/acme/").content.decode()

    assert "The desktop ran into a problem; the platform team has the details." in html
    assert "x.qcow2" not in html


def test_the_session_page_names_the_tls_port_of_a_display_that_offers_only_tls(
        logged_in, make_pool, host, run_tasks, monkeypatch):
    from hypervisors.models import Host
    from vdi.models import Desktop

    monkeypatch.setattr("hypervisors.drivers.libvirt_driver.LibvirtDriver."
                        "set_console_password", lambda *args, **kwargs: None)
    with run_tasks():
        pool = make_pool(min_ready=1)
    Host.objects.filter(pk=host.pk).update(console_ca_cert="-----BEGIN CERTIFICATE-----\nx\n")
    with scopes_disabled():
        Desktop.objects.filter(pool=pool).update(spice_port=None, spice_tls_port=5901)

    with run_tasks():
        html = logged_in("member").post(f"/t/acme/pools/{pool.id}/connect/").content.decode()

    assert 'id="ticket-tls-port">5901 (encrypted' in html
    assert "<dt>Port</dt>" not in html
