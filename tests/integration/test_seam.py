"""The routing seam against the real registry and tenant databases: named errors for what cannot
be routed, the right database for what can, and a bounded set of open engines."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, text, update

from services.core.db import registry_engine
from services.core.errors import (
    HostNotBound,
    NoPlacement,
    TenantNotActive,
    TenantNotFound,
    TenantSuspended,
)
from services.core.models.registry import host_tenant, tenants
from services.core.settings import Settings
from services.core.tenancy import RegistryDirectory, TenantDatabases
from services.core.tenants import create_tenant, registry_connection, set_tenant_status


@pytest.fixture
async def seam(deployment: Settings) -> AsyncIterator[TenantDatabases]:
    reg = registry_engine(deployment, pool_size=2)
    databases = TenantDatabases(deployment, RegistryDirectory(reg))
    yield databases
    await databases.close()
    await reg.dispose()


async def _bind(settings: Settings, host_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
    async with registry_connection(settings) as conn:
        await conn.execute(insert(host_tenant).values(host_id=host_id, tenant_id=tenant_id))
        await conn.commit()


async def _current_database(databases: TenantDatabases, slug: str) -> str:
    async with databases.begin(slug) as conn:
        return str((await conn.execute(text("select current_database()"))).scalar())


async def test_each_tenant_gets_its_own_database(
    deployment: Settings, seam: TenantDatabases, slug: str
) -> None:
    a = (await create_tenant(deployment, f"{slug}-a")).tenant
    b = (await create_tenant(deployment, f"{slug}-b")).tenant
    assert await _current_database(seam, a.slug) == a.db_name
    assert await _current_database(seam, b.slug) == b.db_name
    assert await seam.engine(a.slug) is not await seam.engine(b.slug)
    # Work done through the seam is owned by the tenant's owner role, not the login.
    async with seam.begin(a.slug) as conn:
        assert (
            (await conn.execute(text("select current_user")))
            .scalar()
            .endswith(f"_owner_{slug.replace('-', '_')}_a")
        )


async def test_a_host_resolves_through_its_binding(
    deployment: Settings, seam: TenantDatabases, slug: str
) -> None:
    a = (await create_tenant(deployment, f"{slug}-a")).tenant
    b = (await create_tenant(deployment, f"{slug}-b")).tenant
    host_a, host_b = uuid.uuid4(), uuid.uuid4()
    await _bind(deployment, host_a, a.id)
    await _bind(deployment, host_b, b.id)
    record, engine = await seam.engine_for_host(host_a)
    assert record.slug == a.slug
    async with engine.connect() as conn:
        assert (await conn.execute(text("select current_database()"))).scalar() == a.db_name
    record, _ = await seam.engine_for_host(host_b)
    assert record.slug == b.slug
    with pytest.raises(HostNotBound) as info:
        await seam.engine_for_host(uuid.uuid4())
    assert info.value.reason == "no-tenant-binding"


async def test_unroutable_tenants_raise_and_never_fall_back(
    deployment: Settings, seam: TenantDatabases, slug: str
) -> None:
    with pytest.raises(TenantNotFound):
        await seam.engine("no-such-tenant")

    suspended = (await create_tenant(deployment, f"{slug}-s")).tenant
    await seam.engine(suspended.slug)  # cached while active...
    await set_tenant_status(deployment, suspended.slug, "suspended")
    with pytest.raises(TenantSuspended):  # ...and refused as soon as it is suspended
        await seam.engine(suspended.slug)
    host = uuid.uuid4()
    await _bind(deployment, host, suspended.id)
    with pytest.raises(TenantSuspended):
        await seam.engine_for_host(host)

    unplaced = (await create_tenant(deployment, f"{slug}-u")).tenant
    async with registry_connection(deployment) as conn:
        await conn.execute(
            update(tenants).where(tenants.c.id == unplaced.id).values(placement=None)
        )
        await conn.commit()
    with pytest.raises(NoPlacement):
        await seam.engine(unplaced.slug)

    provisioning = (await create_tenant(deployment, f"{slug}-p")).tenant
    async with registry_connection(deployment) as conn:
        await conn.execute(
            update(tenants).where(tenants.c.id == provisioning.id).values(status="provisioning")
        )
        await conn.commit()
    with pytest.raises(TenantNotActive):
        await seam.engine(provisioning.slug)


async def test_open_engines_are_bounded(deployment: Settings, slug: str) -> None:
    small = deployment.model_copy(update={"max_tenant_engines": 2})
    reg = registry_engine(small, pool_size=1)
    seam = TenantDatabases(small, RegistryDirectory(reg))
    try:
        created = [(await create_tenant(deployment, f"{slug}-{i}")).tenant for i in range(4)]
        for record in created:
            assert await _current_database(seam, record.slug) == record.db_name
            assert seam.open_engines <= 2
        assert seam.open_engines == 2
        # An evicted tenant is simply reopened, still to its own database.
        assert await _current_database(seam, created[0].slug) == created[0].db_name
    finally:
        await seam.close()
        await reg.dispose()
