"""Fixtures of the console proxy's tests: a session on a ready desktop and its browser
tickets."""

from __future__ import annotations

import pytest

from brokers.choices import TicketKind
from brokers.models import ConnectionTicket, Session
from brokers.services import ticket_issue
from tenants.scoping import scopes_disabled
from tests.api.test_slice import connect


@pytest.fixture
def ready_pool(make_pool, host, run_tasks):
    with run_tasks():
        return make_pool(min_ready=1)


@pytest.fixture
def session(api, ready_pool, run_tasks) -> Session:
    body = connect(api("member"), ready_pool, run_tasks).json()
    with scopes_disabled():
        return Session.objects.select_related("desktop", "pool").get(pk=body["session"])


@pytest.fixture
def browser_ticket(session, users, run_tasks):
    """``browser_ticket(port)``: a fresh browser ticket, issued the real way, pointing at
    ``port`` (the simulated host has no VNC display); returns the IssuedTicket."""

    def issue(port: int | None = 5901):
        with run_tasks(), scopes_disabled():
            issued = ticket_issue(session=session, user=users["member"],
                                  kind=TicketKind.BROWSER)
            assert issued is not None and issued.token
            assert issued.ticket.port is None  # the simulated host: no console
            if port is not None:
                ConnectionTicket.objects.filter(pk=issued.ticket.pk).update(port=port)
        return issued

    return issue
