"""Tenant provisioning on the real server, as the least-privilege provisioner: who owns what, who
may connect where, and how errors and interrupted runs are handled."""

from __future__ import annotations

import json
from collections.abc import Callable

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from services.bench.processes import free_port
from services.core.db import one_connection, provisioner_url
from services.core.errors import (
    InvalidArgument,
    ProvisioningError,
    SiloflowError,
    TenantExists,
    TenantNotFound,
)
from services.core.names import Names
from services.core.pgadmin import MAINTENANCE_DATABASE, ensure_owner_role, ident
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.ops import migrate, records
from services.ops.bootstrap import bootstrap, teardown
from services.ops.tenants import (
    create_tenant,
    delete_tenant,
    registry_connection,
    set_tenant_status,
)
from tests.support import ADMIN_DSN, MANAGEMENT, MANAGEMENT_AUTH, admin_fetch, invoke_cli

PG = "postgresql://{user}@127.0.0.1:5432/{db}"


async def _can_connect(user: str, database: str) -> bool:
    try:
        conn = await asyncpg.connect(PG.format(user=user, db=database), timeout=3)
    except asyncpg.InsufficientPrivilegeError:
        return False
    await conn.close()
    return True


async def _namespace_objects(names: Names) -> tuple[set[str], set[str]]:
    pattern = names.role_prefix.replace("_", r"\_") + "%"
    dbs = {
        r[0]
        for r in await admin_fetch("select datname from pg_database where datname like $1", pattern)
    }
    roles = {
        r[0]
        for r in await admin_fetch("select rolname from pg_roles where rolname like $1", pattern)
    }
    return dbs, roles


async def _make_login(settings: Settings, member_of: str) -> str:
    """A login role in `member_of`, as tenant credentials will be (created by the provisioner)."""
    login = f"{member_of}_l1"
    url = provisioner_url(settings, MAINTENANCE_DATABASE)
    async with one_connection(url, settings, autocommit=True) as conn:
        await conn.execute(text(f"create role {ident(login)} login in role {ident(member_of)}"))
    return login


async def test_two_tenants_are_separate_silos(deployment: Settings, slug: str) -> None:
    names = Names(deployment.namespace)
    slug_a, slug_b = f"{slug}-a", f"{slug}-b"
    a = (await create_tenant(deployment, slug_a)).tenant
    b = (await create_tenant(deployment, slug_b, name="Tenant B")).tenant
    assert (a.status, b.status) == ("active", "active")
    assert b.name == "Tenant B"

    for tenant in (a, b):
        owner = names.tenant_owner_role(tenant.slug)
        [row] = await admin_fetch(
            "select pg_get_userbyid(datdba) as owner, has_database_privilege('public', oid, "
            "'CONNECT') as public_connect from pg_database where datname = $1",
            tenant.db_name,
        )
        assert row["owner"] == owner
        assert row["public_connect"] is False
        owners = await admin_fetch(
            "select distinct tableowner from pg_tables where schemaname = 'public'",
            database=tenant.db_name,
        )
        assert [r["tableowner"] for r in owners] == [owner]
        [role] = await admin_fetch("select rolcanlogin from pg_roles where rolname = $1", owner)
        assert role["rolcanlogin"] is False

    # A login that acts for tenant B reaches B's database and not A's.
    login_b = await _make_login(deployment, names.tenant_owner_role(slug_b))
    assert await _can_connect(login_b, b.db_name)
    assert not await _can_connect(login_b, a.db_name)
    # And a login with no tenant role reaches neither (PUBLIC has no CONNECT).
    url = provisioner_url(deployment, MAINTENANCE_DATABASE)
    stranger = f"{deployment.namespace}_stranger"
    async with one_connection(url, deployment, autocommit=True) as conn:
        await conn.execute(text(f"create role {ident(stranger)} login"))
    assert not await _can_connect(stranger, a.db_name)
    assert not await _can_connect(stranger, b.db_name)


async def test_provisioner_is_not_a_superuser(deployment: Settings) -> None:
    [row] = await admin_fetch(
        "select rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolreplication, rolbypassrls "
        "from pg_roles where rolname = $1",
        Names(deployment.namespace).provisioner_role,
    )
    assert dict(row) == {
        "rolsuper": False,
        "rolcreatedb": True,
        "rolcreaterole": True,
        "rolcanlogin": True,
        "rolreplication": False,
        "rolbypassrls": False,
    }


async def test_duplicate_and_invalid_slugs_change_nothing(deployment: Settings, slug: str) -> None:
    names = Names(deployment.namespace)
    await create_tenant(deployment, slug)
    before = await _namespace_objects(names)
    async with registry_connection(deployment) as conn:
        tenants_before = await registry.list_tenants(conn)
    with pytest.raises(TenantExists, match="already exists"):
        await create_tenant(deployment, slug)
    for bad in ("Bad", "x", "has_underscore", "a" * 40, "ok;drop table x"):
        with pytest.raises(InvalidArgument, match="invalid tenant slug"):
            await create_tenant(deployment, bad)
    with pytest.raises(InvalidArgument, match="unknown placement 'nowhere'"):
        await create_tenant(deployment, f"{slug}-x", placement="nowhere")
    assert await _namespace_objects(names) == before
    async with registry_connection(deployment) as conn:
        assert await registry.list_tenants(conn) == tenants_before


async def test_a_half_finished_provisioning_is_resumed(deployment: Settings, slug: str) -> None:
    names = Names(deployment.namespace)
    # What a crash after the first steps leaves: the registry row (provisioning) and the owner
    # role, but no database and no schema.
    async with registry_connection(deployment) as conn:
        await records.insert_tenant(
            conn, slug=slug, name=slug, placement="default", db_name=names.tenant_database(slug)
        )
        await conn.commit()
    url = provisioner_url(deployment, MAINTENANCE_DATABASE)
    async with one_connection(url, deployment, autocommit=True) as conn:
        await ensure_owner_role(conn, names.tenant_owner_role(slug))

    result = await create_tenant(deployment, slug)
    assert result.resumed
    assert result.tenant.status == "active"
    assert result.tenant.schema_revision is not None
    tables = await admin_fetch(
        "select tablename from pg_tables where schemaname = 'public'",
        database=names.tenant_database(slug),
    )
    assert {"hosts", "agent_messages"} <= {r["tablename"] for r in tables}


async def test_a_half_finished_provisioning_can_be_cleaned_up(
    deployment: Settings, slug: str
) -> None:
    names = Names(deployment.namespace)
    async with registry_connection(deployment) as conn:
        await records.insert_tenant(
            conn, slug=slug, name=slug, placement="default", db_name=names.tenant_database(slug)
        )
        await conn.commit()
    await delete_tenant(deployment, slug)
    dbs, _ = await _namespace_objects(names)
    assert names.tenant_database(slug) not in dbs
    async with registry_connection(deployment) as conn:
        assert await registry.get_tenant(conn, slug) is None


async def test_a_database_no_tenant_records_is_not_adopted(deployment: Settings, slug: str) -> None:
    names = Names(deployment.namespace)
    url = provisioner_url(deployment, MAINTENANCE_DATABASE)
    async with one_connection(url, deployment, autocommit=True) as conn:
        await conn.execute(text(f"create database {ident(names.tenant_database(slug))}"))
    with pytest.raises(ProvisioningError, match="no tenant records it"):
        await create_tenant(deployment, slug)
    async with registry_connection(deployment) as conn:
        assert await registry.get_tenant(conn, slug) is None


async def test_delete_removes_database_role_and_registry_rows(
    deployment: Settings, slug: str
) -> None:
    names = Names(deployment.namespace)
    await create_tenant(deployment, slug)
    await delete_tenant(deployment, slug)
    dbs, roles = await _namespace_objects(names)
    assert names.tenant_database(slug) not in dbs
    assert names.tenant_owner_role(slug) not in roles
    async with registry_connection(deployment) as conn:
        assert await registry.get_tenant(conn, slug) is None
    with pytest.raises(TenantNotFound):
        await delete_tenant(deployment, slug)


async def test_suspend_and_resume(deployment: Settings, slug: str) -> None:
    await create_tenant(deployment, slug)
    assert (await set_tenant_status(deployment, slug, "suspended")).status == "suspended"
    with pytest.raises(TenantExists):
        await create_tenant(deployment, slug)
    assert (await set_tenant_status(deployment, slug, "active")).status == "active"
    with pytest.raises(TenantNotFound):
        await set_tenant_status(deployment, "no-such-tenant", "suspended")


async def broker_users(settings: Settings) -> list[str]:
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        response = await api.get("/users")
        response.raise_for_status()
        return sorted(
            u["name"] for u in response.json() if u["name"].startswith(f"{settings.namespace}-")
        )


async def test_a_teardown_that_cannot_reach_the_superuser_changes_nothing(
    fresh_namespace: Callable[..., Settings],
) -> None:
    """Before, the broker users and the topology were removed first and the unreachable server
    found only afterwards: a half torn-down deployment."""
    settings = fresh_namespace()
    await bootstrap(settings, ADMIN_DSN)
    await migrate.migrate(settings)
    users_before = await broker_users(settings)
    closed = ADMIN_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
    with pytest.raises(SiloflowError):
        await teardown(settings, closed)
    assert await broker_users(settings) == users_before
    assert settings.broker_users_file.exists()
    assert (await migrate.migrate(settings)).failed == []  # everything still there and working


async def test_placement_add_prepares_its_server_with_the_provisioner_in_one_step(
    deployment: Settings, slug: str
) -> None:
    role = Names(deployment.namespace).provisioner_role
    name = f"{slug}-p"
    base = ["placement", "add", name, "--host", "127.0.0.1", "--port", "5432"]
    done = await invoke_cli([*base, "--admin-dsn", ADMIN_DSN], deployment)
    assert done.exit_code == 0, done.output
    assert f"role {role} on 127.0.0.1:5432" in done.output
    rows = await admin_fetch(
        "select rolcanlogin, rolcreatedb, rolcreaterole, rolsuper, rolreplication, rolbypassrls "
        "from pg_roles where rolname = $1",
        role,
    )
    assert [tuple(r) for r in rows] == [(True, True, True, False, False, False)]
    # Again, on the placement it recorded: the role brought up to date, nothing refused.
    again = await invoke_cli([*base, "--admin-dsn", ADMIN_DSN], deployment)
    assert again.exit_code == 0, again.output
    listed = await invoke_cli(["placement", "list", "--json"], deployment)
    assert [p["name"] for p in json.loads(listed.output)].count(name) == 1

    # A superuser DSN of another server than the placement's is refused, and nothing recorded.
    other = f"{slug}-q"
    wrong = ADMIN_DSN.replace("127.0.0.1:5432", "127.0.0.1:1").replace(
        "@127.0.0.1/", "@127.0.0.1:1/"
    )
    refused = await invoke_cli(
        ["placement", "add", other, "--host", "127.0.0.1", "--port", "5432", "--admin-dsn", wrong],
        deployment,
    )
    assert refused.exit_code == 2, refused.output
    assert "points at 127.0.0.1:1 but the placement is on 127.0.0.1:5432" in refused.output
    # The same name on another server is refused too.
    moved = await invoke_cli(
        ["placement", "add", name, "--host", "127.0.0.2", "--admin-dsn", ADMIN_DSN], deployment
    )
    assert moved.exit_code == 2 and "already exists (127.0.0.1:5432)" in moved.output
    listed = await invoke_cli(["placement", "list", "--json"], deployment)
    names = [p["name"] for p in json.loads(listed.output)]
    assert other not in names and names.count(name) == 1

    # Without --admin-dsn it records the placement and says how to prepare the server.
    plain = await invoke_cli(
        ["placement", "add", f"{slug}-r", "--host", "127.0.0.1", "--port", "5433"], deployment
    )
    assert plain.exit_code == 0 and "--admin-dsn <that server's superuser DSN>" in plain.output
