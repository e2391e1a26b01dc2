"""The routing seam against the real registry and tenant databases: named errors for what cannot
be routed, the right database for what can, a bounded set of open engines, and the session
settings its user asks for."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, insert, text, update

from services.core.db import registry_engine
from services.core.errors import (
    HostNotBound,
    HostRevoked,
    NoPlacement,
    TenantNotActive,
    TenantNotFound,
    TenantSuspended,
)
from services.core.registry.models import host_tenant, tenants
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.ops.tenants import create_tenant, registry_connection, set_tenant_status
from services.workers import store
from tests.support import admin_fetch


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
    # A revoked binding is refused as revoked (the router's reason), not taken for none.
    async with registry_connection(deployment) as conn:
        await conn.execute(
            update(host_tenant).where(host_tenant.c.host_id == host_b).values(revoked_at=func.now())
        )
        await conn.commit()
    with pytest.raises(HostRevoked) as revoked:
        await seam.engine_for_host(host_b)
    assert revoked.value.reason == "host-revoked"


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


async def test_connections_in_use_are_bounded_however_many_tenants_commit_at_once(
    deployment: Settings, slug: str
) -> None:
    """Six tenants committing at once through a process allowed two engines of one connection:
    never more than two connections in use, and at most twice that open on the server."""
    small = deployment.model_copy(update={"max_tenant_engines": 2, "tenant_pool_size": 1})
    reg = registry_engine(small, pool_size=1)
    seam = TenantDatabases(small, RegistryDirectory(reg))
    created = [(await create_tenant(deployment, f"{slug}-c{i}")).tenant for i in range(6)]
    in_use, most_in_use, most_open = 0, 0, 0

    async def commit(record: TenantRecord) -> None:
        nonlocal in_use, most_in_use, most_open
        async with seam.session(record) as conn:
            in_use += 1
            most_in_use = max(most_in_use, in_use)
            opened = await admin_fetch(
                "select count(*) from pg_stat_activity where datname = any($1::text[])",
                [r.db_name for r in created],
            )
            most_open = max(most_open, opened[0][0])
            assert (await conn.execute(text("select current_database()"))).scalar() == (
                record.db_name
            )
            await asyncio.sleep(0.2)
            in_use -= 1

    try:
        await asyncio.gather(*(commit(r) for r in created))
    finally:
        await seam.close()
        await reg.dispose()
    assert most_in_use == 2
    assert most_open <= 4


async def test_a_pooled_connection_the_server_ended_is_replaced_without_an_error(
    deployment: Settings, seam: TenantDatabases, slug: str
) -> None:
    """The pool does not pre-ping (three round trips a batch): a connection whose backend was
    terminated while it sat in the pool must be passed over, not handed out to fail."""
    tenant = (await create_tenant(deployment, slug)).tenant
    async with seam.session(tenant) as conn:
        first = (await conn.execute(text("select pg_backend_pid()"))).scalar()
        pooled = (await conn.get_raw_connection()).driver_connection
        goodbye = asyncio.Event()
        pooled.add_termination_listener(lambda _connection: goodbye.set())
    ended = await admin_fetch("select pg_terminate_backend($1) as ok", first)
    assert ended[0]["ok"] is True
    await asyncio.wait_for(goodbye.wait(), 10)  # the client has read the server's goodbye
    assert pooled.is_closed()
    async with seam.session(tenant) as conn:
        second = (await conn.execute(text("select pg_backend_pid()"))).scalar()
    assert second != first


async def test_a_connection_that_dies_in_use_is_dropped_from_the_pool(
    deployment: Settings, seam: TenantDatabases, slug: str
) -> None:
    tenant = (await create_tenant(deployment, slug)).tenant
    with pytest.raises(Exception):  # noqa: B017 - whatever asyncpg raises for a lost link
        async with seam.session(tenant) as conn:
            pid = (await conn.execute(text("select pg_backend_pid()"))).scalar()
            raw = (await conn.get_raw_connection()).driver_connection
            await admin_fetch("select pg_terminate_backend($1)", pid)
            await raw.execute("select pg_sleep(0.5)")
    async with seam.session(tenant) as conn:
        again = (await conn.execute(text("select pg_backend_pid()"))).scalar()
    assert again != pid


async def test_session_settings_reach_every_tenant_connection(
    deployment: Settings, slug: str
) -> None:
    """The workers open tenant connections with their commits' session settings; other users of
    the seam keep the server's defaults."""
    tenant = (await create_tenant(deployment, slug)).tenant
    reg = registry_engine(deployment, pool_size=1)
    tuned = TenantDatabases(
        deployment, RegistryDirectory(reg), server_settings=store.SESSION_SETTINGS
    )
    plain = TenantDatabases(deployment, RegistryDirectory(reg))
    try:
        for databases, expected in ((tuned, "force_generic_plan"), (plain, "auto")):
            async with databases.session(tenant) as conn:
                shown = (await conn.execute(text("show plan_cache_mode"))).scalar()
            assert shown == expected
    finally:
        await tuned.close()
        await plain.close()
        await reg.dispose()


async def test_the_driver_connection_is_the_tenants_own_and_recovers_like_a_session(
    deployment: Settings, seam: TenantDatabases, slug: str
) -> None:
    """`driver` (the workers' way in: asyncpg alone) lands in the tenant's database as its
    owner, passes over a pooled connection the server ended, and drops one that dies in use."""
    tenant = (await create_tenant(deployment, slug)).tenant
    async with seam.driver(tenant) as pg:
        database, user, first = await pg.fetchrow(
            "select current_database(), current_user, pg_backend_pid()"
        )
        goodbye = asyncio.Event()
        pg.add_termination_listener(lambda _connection: goodbye.set())
    assert database == tenant.db_name
    assert user.endswith(f"_owner_{slug.replace('-', '_')}")
    await admin_fetch("select pg_terminate_backend($1)", first)
    await asyncio.wait_for(goodbye.wait(), 10)  # the client has read the server's goodbye
    async with seam.driver(tenant) as pg:
        second = await pg.fetchval("select pg_backend_pid()")
    assert second != first

    with pytest.raises(Exception):  # noqa: B017 - whatever asyncpg raises for a lost link
        async with seam.driver(tenant) as pg:
            await admin_fetch("select pg_terminate_backend($1)", second)
            await pg.execute("select pg_sleep(0.5)")
    async with seam.driver(tenant) as pg:
        third = await pg.fetchval("select pg_backend_pid()")
    assert third not in (first, second)
