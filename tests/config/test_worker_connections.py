"""Workers keep a good database connection between tasks and replace a broken one, as Django
does between requests (config/celery.py), instead of reconnecting for every task."""

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.db import connection

from config.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


class Task:
    def __init__(self, *, eager: bool = False):
        self.request = type("Request", (), {"is_eager": eager})()


def run_task_signals(*, eager: bool = False):
    """What a worker does around one task: Celery's Django fix-up, then the signals."""
    sender = Task(eager=eager)
    fixup = DjangoWorkerFixup(app)
    for signal, fixup_hook in ((task_prerun, fixup.on_task_prerun),
                               (task_postrun, fixup.on_task_postrun)):
        fixup_hook(sender)
        signal.send(sender=sender, task_id="t", task=sender, args=(), kwargs={})


def select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def test_a_good_connection_is_kept_as_long_as_conn_max_age_allows():
    select_one()
    raw = connection.connection
    run_task_signals()
    if connection.settings_dict["CONN_MAX_AGE"]:  # PostgreSQL: 60 s by default
        assert connection.connection is raw
    else:  # SQLite: a connection per unit of work, as in web requests
        assert connection.connection is None
    assert select_one() == 1


def test_a_broken_connection_is_replaced_before_the_next_task():
    select_one()
    raw = connection.connection
    raw.close()  # the server went away under it
    connection.errors_occurred = True  # as Django marks it when a query fails
    run_task_signals()
    assert select_one() == 1
    assert connection.connection is not raw


@pytest.mark.django_db(transaction=False)
def test_a_task_run_in_process_leaves_its_callers_transaction_alone():
    select_one()
    raw = connection.connection
    run_task_signals(eager=True)
    assert connection.connection is raw and connection.in_atomic_block
