"""A pool's autoscaler is queued once however many changes ask for it before it starts: a
storm of Connects queues a run or two, not one per Connect, and no change is missed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.scoping import scopes_disabled
from tests.api.test_slice import connect
from vdi.choices import DesktopState
from vdi.models import Desktop, Pool
from vdi.services import operations, pool_autoscale_enqueue, pool_autoscale_started


@pytest.fixture
def sent(monkeypatch):
    """The autoscale runs queued (pool ids), with a broker that takes every message."""
    queued: list[str] = []

    def send(task, *args):
        assert task == "vdi.pool_autoscale"
        queued.append(*args)
        return True

    monkeypatch.setattr(operations, "send", send)
    return queued


def mark(pool: Pool):
    with scopes_disabled():
        return Pool.objects.values_list("autoscale_queued_at", flat=True).get(pk=pool.pk)


def test_changes_before_the_run_starts_queue_it_once(make_pool, sent,
                                                      django_capture_on_commit_callbacks):
    pool = make_pool()
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            pool_autoscale_enqueue(pool)
    assert sent == [str(pool.pk)] and mark(pool) is not None

    pool_autoscale_started(pool.pk)  # the run starts: what commits from now on is news
    assert mark(pool) is None
    with django_capture_on_commit_callbacks(execute=True):
        pool_autoscale_enqueue(pool)
    assert sent == [str(pool.pk)] * 2


def test_nothing_is_queued_for_a_transaction_that_rolls_back(make_pool, sent,
                                                             django_capture_on_commit_callbacks):
    pool = make_pool()
    sent.clear()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        pool_autoscale_enqueue(pool)
    assert len(callbacks) == 1 and sent == [] and mark(pool) is None


def test_a_mark_older_than_a_minute_was_a_lost_run_and_queues_another(
        make_pool, sent, django_capture_on_commit_callbacks):
    pool = make_pool()
    sent.clear()
    with scopes_disabled():
        Pool.objects.filter(pk=pool.pk).update(
            autoscale_queued_at=timezone.now() - timedelta(seconds=61))
    with django_capture_on_commit_callbacks(execute=True):
        pool_autoscale_enqueue(pool)
    assert sent == [str(pool.pk)]


def test_a_message_the_broker_refused_leaves_no_mark(make_pool, monkeypatch,
                                                     django_capture_on_commit_callbacks):
    pool = make_pool()
    monkeypatch.setattr(operations, "send", lambda task, *args: False)
    with django_capture_on_commit_callbacks(execute=True):
        pool_autoscale_enqueue(pool)
    assert mark(pool) is None  # the next change queues it again


def test_connects_in_a_row_still_get_every_spare_replaced(api, make_pool, host, run_tasks):
    with run_tasks():
        pool = make_pool(min_ready=2, max_desktops=10)
    for role in ("member", "admin", "owner"):
        assert connect(api(role), pool, run_tasks).status_code == 200
    with scopes_disabled():
        spares = Desktop.objects.filter(pool=pool, assigned_user=None,
                                        state=DesktopState.RUNNING).count()
    assert spares == 2 and mark(pool) is None
