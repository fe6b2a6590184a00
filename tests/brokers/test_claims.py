"""Concurrent claims on real database connections: a spare goes to one user only."""

import threading

import pytest
from django.db import connection, transaction

from tenants.scoping import tenant_scope
from vdi.models import Desktop
from vdi.services import desktop_claim_spare

pytestmark = pytest.mark.django_db(transaction=True)


def test_parallel_claims_hand_each_spare_to_one_user(make_pool, make_user, tenant, host):
    pool = make_pool(min_ready=0)
    with tenant_scope(tenant):
        for n in range(5):
            Desktop.objects.create(tenant=tenant, pool=pool, image=pool.image, name=f"spare-{n}",
                                   vcpus=1, memory_mb=256, state="running", host=host)
    claimants = [make_user(f"user{n}") for n in range(12)]
    barrier = threading.Barrier(len(claimants))
    won: dict[str, str] = {}
    errors: list[BaseException] = []

    def claim(user):
        try:
            barrier.wait()
            with tenant_scope(tenant), transaction.atomic():
                desktop = desktop_claim_spare(pool=pool, user=user, state="running")
            if desktop is not None:
                won[user.username] = desktop.name
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(user,)) for user in claimants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(won) == 5 and len(set(won.values())) == 5
    with tenant_scope(tenant):
        owners = dict(Desktop.objects.values_list("name", "assigned_user__username"))
    assert {name: user for user, name in won.items()} == owners
