"""Single-tenant mode: the same code on one database holding all three partitions and exactly one
tenant, `default`."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import insert, text

from services.core.db import registry_engine
from services.core.errors import NotInSingleTenantMode
from services.core.names import CHAINS, DEFAULT_TENANT, VERSION_TABLES, Names
from services.core.registry.models import host_tenant
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.ops import chains as migrator
from services.ops import migrate
from services.ops.bootstrap import bootstrap
from services.ops.tenants import create_tenant, delete_tenant, registry_connection
from tests.support import ADMIN_DSN, admin_fetch, invoke_cli


async def test_one_database_holds_all_three_partitions(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace(multitenant=False)
    report = await bootstrap(settings, ADMIN_DSN)
    assert report.databases == [settings.registry_database]  # no separate shared database
    assert not (await migrate.migrate(settings)).failed
    assert not (await migrate.migrate(settings)).failed  # and again: idempotent

    tables = {
        r["tablename"]: r["tableowner"]
        for r in await admin_fetch(
            "select tablename, tableowner from pg_tables where schemaname = 'public'",
            database=settings.registry_database,
        )
    }
    for chain in CHAINS:
        assert VERSION_TABLES[chain] in tables
    names = Names(settings.namespace)
    assert tables["registry_tenants"] == names.provisioner_role
    assert tables["hosts"] == names.tenant_owner_role(DEFAULT_TENANT)

    listed = await invoke_cli(["tenant", "list", "--json"], settings)
    assert listed.exit_code == 0, listed.output
    assert '"slug": "default"' in listed.output
    assert f'"schema_revision": "{migrator.head_revision("tenant")}"' in listed.output
    assert listed.output.count('"slug"') == 1

    reg = registry_engine(settings, pool_size=1)
    seam = TenantDatabases(settings, RegistryDirectory(reg))
    try:
        tenant = await seam.resolve(DEFAULT_TENANT)
        host = uuid.uuid4()
        async with registry_connection(settings) as conn:
            await conn.execute(insert(host_tenant).values(host_id=host, tenant_id=tenant.id))
            await conn.commit()
        record, engine = await seam.engine_for_host(host)
        assert record.slug == DEFAULT_TENANT
        async with engine.connect() as conn:
            db = (await conn.execute(text("select current_database()"))).scalar()
            assert db == settings.registry_database
            # The tenant's role cannot read the registry even though it shares the database.
            with pytest.raises(Exception, match="permission denied"):
                await conn.execute(text("select * from registry_tenants"))
    finally:
        await seam.close()
        await reg.dispose()


async def test_multi_tenant_commands_say_they_do_not_apply(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace(multitenant=False)
    with pytest.raises(NotInSingleTenantMode, match="SILOFLOW_MULTITENANT=false"):
        await create_tenant(settings, "acme")
    with pytest.raises(NotInSingleTenantMode):
        await delete_tenant(settings, DEFAULT_TENANT)
    result = await invoke_cli(["tenant", "create", "acme"], settings)
    assert result.exit_code == 2
    assert "exactly one tenant" in result.output
