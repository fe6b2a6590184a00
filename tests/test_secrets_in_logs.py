"""No password, token or console secret reaches the logs, whatever the level or format.

A whole scenario runs with every logger at DEBUG (SQL statements and their parameters
included), written both as plain lines and as the production JSON lines; then every secret
it handled is looked for in what was written."""

from __future__ import annotations

import io
import logging
import re

import pytest
from django.db import connection

from brokers.models import ConnectionTicket
from brokers.proxy import ConsoleTokenPlugin
from tenants.scoping import scopes_disabled
from tests.api.test_slice import connect
from tests.conftest import PASSWORD
from core.logformat import JsonFormatter


@pytest.fixture
def everything_logged():
    stream = io.StringIO()
    handlers = [logging.StreamHandler(stream), logging.StreamHandler(stream)]
    handlers[0].setFormatter(JsonFormatter())
    handlers[1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger()] + [logging.getLogger(name)
                                       for name in list(logging.root.manager.loggerDict)]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    non_propagating = [logger for logger in loggers[1:] if not logger.propagate]
    for logger in non_propagating:
        for handler in handlers:
            logger.addHandler(handler)
    connection.force_debug_cursor = True  # SQL and its parameters, as DEBUG=True would log
    try:
        yield stream
    finally:
        connection.force_debug_cursor = False
        for logger in non_propagating:
            for handler in handlers:
                logger.removeHandler(handler)
        for handler in handlers:
            root.removeHandler(handler)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


def test_no_secret_is_ever_logged(client, api, users, make_pool, host, run_tasks,
                                  django_capture_on_commit_callbacks, mailoutbox,
                                  everything_logged, monkeypatch):
    secrets = {"password": PASSWORD, "wrong password": "Wrong-Guess-7Qz!"}
    with run_tasks():
        pool = make_pool(min_ready=1)

    # The portal's login, once wrong and once right.
    assert client.post("/accounts/login/", {"username": "member",
                                            "password": secrets["wrong password"]}).status_code == 200
    assert client.post("/accounts/login/", {"username": "member",
                                            "password": PASSWORD}).status_code == 302

    # The API's token login, then Connect: a SPICE ticket.
    member = api()
    token = member.post("/api/v1/auth/token/", {"username": "member", "password": PASSWORD},
                        format="json").json()["token"]
    secrets["API token"] = token
    member.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    ticket = connect(member, pool, run_tasks).json()
    secrets["SPICE password"] = ticket["password"]

    # The .vv file: another fresh password.
    with run_tasks():
        vv = member.get(f"/api/v1/tenants/acme/sessions/{ticket['session']}/console.vv")
    assert vv.status_code == 200
    secrets[".vv password"] = re.search(r"^password=(\S+)$", vv.content.decode(), re.M).group(1)

    # The browser console: a VNC password and the proxy's single-use token, which the
    # proxy's token plugin then consumes. The worker reports the password set, as a real
    # host would (the simulated one can't), so the page hands them out.
    monkeypatch.setattr("hypervisors.drivers.libvirt_driver.LibvirtDriver."
                        "set_console_password", lambda *args, **kwargs: None)
    with run_tasks():
        page = client.get(f"/t/acme/sessions/{ticket['session']}/console/").content.decode()
    secrets["console token"] = re.search(r"token=([A-Za-z0-9_-]+)", page).group(1)
    secrets["VNC password"] = re.search(r'"password": "([^"]+)"', page).group(1)
    with scopes_disabled():
        ConnectionTicket.objects.filter(kind="browser").update(port=5901)
    assert ConsoleTokenPlugin().lookup(secrets["console token"]) == ("127.0.0.1", 5901)

    # An invitation: its e-mailed set-password link, then the invitee's new password.
    with django_capture_on_commit_callbacks(execute=True):
        api("owner").post("/api/v1/tenants/acme/members/",
                          {"email": "newcomer@example.com", "role": "member"}, format="json")
    link = re.search(r"https?://\S+/invitations/(\S+)/(\S+)/", mailoutbox[-1].body)
    secrets["invitation token"] = link.group(2)
    landing = client.get(link.group(0))
    secrets["new password"] = "plum-orbit-canvas-42"
    done = client.post(landing["Location"], {"new_password1": secrets["new password"],
                                             "new_password2": secrets["new password"]})
    assert done.status_code == 302

    logged = everything_logged.getvalue()
    assert len(logged) > 10_000  # the scenario was really logged, SQL included
    assert "INSERT INTO" in logged and '"request_id"' in logged
    leaked = [name for name, secret in secrets.items() if secret in logged]
    assert leaked == []
