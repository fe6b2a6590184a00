"""The tenancy kernel fails closed: no scope, no rows."""

import pytest
from django.apps import apps

from tenants.models import Tenant
from tenants.scoping import (
    TenantOrSharedManager,
    TenantScopedManager,
    TenantScopeError,
    scopes_disabled,
    tenant_scope,
)
from vdi.models import Image, Pool

PROJECT_APPS = ("core", "tenants", "hypervisors", "vdi", "brokers")
# Owned by the platform (shared by every tenant) or by a user, never by one tenant.
PLATFORM_MODELS = {"tenants.Tenant", "tenants.ApiToken", "hypervisors.Host",
                   "core.IdempotentRequest"}


def project_models():
    return [m for app in PROJECT_APPS for m in apps.get_app_config(app).get_models()]


@pytest.mark.parametrize("model", project_models(), ids=lambda m: m._meta.label)
def test_every_tenant_owned_model_has_tenant_fk_and_fail_closed_manager(model):
    if model._meta.label in PLATFORM_MODELS:
        assert not isinstance(model._default_manager, TenantScopedManager)
        return
    tenant_field = model._meta.get_field("tenant")
    assert tenant_field.related_model is Tenant, f"{model._meta.label}.tenant must point to Tenant"
    assert isinstance(model._default_manager, TenantScopedManager), (
        f"{model._meta.label} must use the fail-closed manager"
    )
    with pytest.raises(TenantScopeError):
        model._default_manager.all()


def test_registry_covers_every_model_of_the_project():
    labels = {m._meta.label for m in project_models()}
    assert {"vdi.Pool", "vdi.Desktop", "vdi.Operation", "vdi.Image", "brokers.Session",
            "brokers.ConnectionTicket", "tenants.Membership"} <= labels
    assert PLATFORM_MODELS <= labels


def test_scope_filters_to_the_tenant(make_pool, tenant, other_tenant, image, users):
    make_pool(name="Mine")
    with tenant_scope(other_tenant):
        Pool.objects.create(tenant=other_tenant, name="Theirs", image=image)
    with tenant_scope(tenant):
        assert list(Pool.objects.values_list("name", flat=True)) == ["Mine"]
    with tenant_scope(other_tenant):
        assert list(Pool.objects.values_list("name", flat=True)) == ["Theirs"]
    with scopes_disabled():
        assert Pool.objects.count() == 2
    with pytest.raises(TenantScopeError):
        list(Pool.objects.all())


def test_public_images_are_shared_private_ones_are_not(tenant, other_tenant, image):
    assert isinstance(Image._default_manager, TenantOrSharedManager)
    with scopes_disabled():
        Image.objects.create(tenant=other_tenant, name="secret", base_volume="s.qcow2")
    with tenant_scope(tenant):
        assert list(Image.objects.values_list("name", flat=True)) == ["debian"]
    with tenant_scope(other_tenant):
        assert sorted(Image.objects.values_list("name", flat=True)) == ["debian", "secret"]


def test_scopes_nest_and_restore(tenant, other_tenant):
    with tenant_scope(tenant):
        with scopes_disabled():
            assert Pool.objects.count() == 0
        with tenant_scope(other_tenant):
            pass
        Pool.objects.count()  # still scoped to tenant: no error
    with pytest.raises(TenantScopeError):
        Pool.objects.count()
