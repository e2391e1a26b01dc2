"""Tenant life cycle, run as the provisioner: create (resumable), suspend, resume, delete.
The registry row is written first and removed last, so a crash at any step leaves a record that
the same command, run again, finishes from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.broker.connection import connect
from services.core.broker.users import BrokerRole
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.domain import TenantStatus
from services.core.errors import (
    InvalidArgument,
    NotInSingleTenantMode,
    ProvisioningError,
    SchemaOutOfDate,
    TenantExists,
    TenantNotFound,
)
from services.core.names import DEFAULT_PLACEMENT, DEFAULT_TENANT, Names, validate_slug
from services.core.pgadmin import (
    MAINTENANCE_DATABASE,
    database_exists,
    drop_database,
    drop_role,
    ensure_database,
    ensure_owner_role,
    ident,
    role_exists,
    set_role,
)
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.core.silo.models import audit_log
from services.ops import chains as migrator
from services.ops import records, topology
from services.ops.credentials import credential_admin

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CreateResult:
    """A tenant created, and whether an interrupted creation was finished."""

    tenant: registry.TenantRecord
    resumed: bool


@asynccontextmanager
async def registry_connection(settings: Settings) -> AsyncIterator[AsyncConnection]:
    """The registry database, as the provisioner."""
    url = provisioner_url(settings, settings.registry_database)
    hint = " (run `siloflow bootstrap` and `siloflow migrate` first)"
    async with one_connection(url, settings, hint=hint) as conn:
        current = await migrator.current_revision(conn, "registry")
        head = migrator.head_revision("registry")
        if current != head:
            raise SchemaOutOfDate(f"the registry ({settings.registry_database})", current, head)
        await conn.rollback()  # hand over a connection with no transaction begun
        yield conn


def require_multitenant(settings: Settings, what: str) -> None:
    """Refuse a tenant-lifecycle command in single-tenant mode, naming it."""
    if not settings.multitenant:
        raise NotInSingleTenantMode(
            f"`{what}` is for multi-tenant deployments; this one runs with "
            f"SILOFLOW_MULTITENANT=false and has exactly one tenant, '{DEFAULT_TENANT}'"
        )


async def create_tenant(
    settings: Settings,
    slug: str,
    *,
    name: str | None = None,
    placement: str | None = None,
    choose: Callable[[], Awaitable[str]] | None = None,
) -> CreateResult:
    """Provision a tenant: owner role, database, tenant chain, registry row; resumes a
    half-finished one. A new tenant goes to `placement`, else where `choose` says (the CLI's
    rule: `placements.for_new_tenant`), else to the default placement."""
    require_multitenant(settings, "tenant create")
    validate_slug(slug)
    names = Names(settings.namespace)
    async with registry_connection(settings) as conn:
        existing = await registry.get_tenant(conn, slug)
        if existing is not None:
            _check_resumable(existing, placement)
            target = existing.placement
            tenant_id = existing.id
            resumed = True
        else:
            if placement is None and choose is not None:
                placement = await choose()
            target = await records.get_placement(conn, placement or DEFAULT_PLACEMENT)
            if target is None:
                known = [p.name for p in await records.list_placements(conn)]
                raise InvalidArgument(
                    f"unknown placement {placement or DEFAULT_PLACEMENT!r}"
                    + (
                        f"; known placements: {', '.join(known)}"
                        if known
                        else "; run `siloflow migrate` first, it records the default placement"
                    )
                )
            await _check_no_leftovers(settings, names, slug, target)
            tenant_id = await records.insert_tenant(
                conn,
                slug=slug,
                name=name or slug,
                placement=target.name,
                db_name=names.tenant_database(slug),
            )
            await conn.commit()
            resumed = False
        if target is None:
            raise ProvisioningError(slug, f"tenant {slug!r} has no placement; cannot provision it")
        log.info("tenant.provisioning", tenant=slug, resumed=resumed, placement=target.name)
        server = ServerAddress(target.host, target.port)
        database = names.tenant_database(slug)
        owner = names.tenant_owner_role(slug)
        await _ensure_role_and_database(settings, server, database, owner)
        revision = await migrate_tenant_database(settings, server, database, owner)
        await ensure_reader(settings, server, database, slug)
        await credential_admin(settings).register(slug, server, database)
        # The queue exists before the tenant is active: the router never routes to a tenant
        # whose queue is missing.
        await tenant_queue(settings, slug, declare=True)
        await records.record_migration(conn, tenant_id, revision=revision, error=None)
        await records.set_status(conn, tenant_id, TenantStatus.ACTIVE)
        await conn.commit()
        record = await registry.get_tenant(conn, slug)
    assert record is not None  # we hold the only writer path and just committed it
    log.info("tenant.created", tenant=slug, database=database, revision=revision, resumed=resumed)
    return CreateResult(record, resumed)


def _check_resumable(existing: registry.TenantRecord, placement: str | None) -> None:
    if existing.status in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
        raise TenantExists(
            existing.slug, f"tenant {existing.slug!r} already exists ({existing.status})"
        )
    if existing.status == TenantStatus.DELETING:
        raise ProvisioningError(
            existing.slug,
            f"tenant {existing.slug!r} is being deleted; finish with "
            f"`siloflow tenant delete {existing.slug} --yes` before creating it again",
        )
    if placement is not None and (
        existing.placement is None or existing.placement.name != placement
    ):
        current = existing.placement.name if existing.placement else None
        raise InvalidArgument(
            f"tenant {existing.slug!r} was half-provisioned on placement {current!r}; resume it "
            f"there (omit --placement) or delete it first"
        )


async def _check_no_leftovers(
    settings: Settings, names: Names, slug: str, placement: registry.Placement
) -> None:
    """Refuse to adopt a database or role that no tenant record accounts for."""
    url = at_server(
        provisioner_url(settings),
        ServerAddress(placement.host, placement.port),
        MAINTENANCE_DATABASE,
    )
    async with one_connection(url, settings) as conn:
        database = names.tenant_database(slug)
        if await database_exists(conn, database):
            raise ProvisioningError(
                slug,
                f"database {database} already exists on placement {placement.name!r} but no "
                "tenant records it; drop it or choose another slug",
            )
        owner = names.tenant_owner_role(slug)
        if await role_exists(conn, owner):
            raise ProvisioningError(
                slug,
                f"role {owner} already exists but no tenant records it; drop it or choose "
                "another slug",
            )


async def _ensure_role_and_database(
    settings: Settings, server: ServerAddress, database: str, owner: str
) -> None:
    url = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
    async with one_connection(url, settings, autocommit=True) as conn:
        await ensure_owner_role(conn, owner)
        await ensure_database(conn, database, owner)


async def ensure_reader(
    settings: Settings, server: ServerAddress, database: str, slug: str
) -> None:
    """The tenant's reader role: CONNECT to its database, SELECT on the tables its owner owns
    (now and later) and INSERT on its audit log, nothing else. Idempotent; run after every
    migration, copy and restore (a dump is restored without its grants)."""
    names = Names(settings.namespace)
    owner, reader = names.tenant_owner_role(slug), names.tenant_reader_role(slug)
    url = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
    async with one_connection(url, settings, autocommit=True) as conn:
        if not await role_exists(conn, reader):
            await conn.exec_driver_sql(f"create role {ident(reader)} nologin")
        await conn.exec_driver_sql(
            f"grant connect on database {ident(database)} to {ident(reader)}"
        )
    url = at_server(provisioner_url(settings), server, database)
    async with one_connection(url, settings) as conn:
        await set_role(conn, owner)
        # Only the owner's tables: in single-tenant mode the registry's share the schema.
        owned = await conn.exec_driver_sql(
            "select tablename from pg_tables where schemaname = 'public' "
            "and tableowner = current_user"
        )
        await conn.exec_driver_sql(f"grant usage on schema public to {ident(reader)}")
        for (table,) in owned.all():
            await conn.exec_driver_sql(f"grant select on {ident(table)} to {ident(reader)}")
            if table == audit_log.name:
                # The API records what its callers do to the tenant here, and writes nowhere
                # else: append only (no UPDATE, DELETE or TRUNCATE for anyone but the owner).
                await conn.exec_driver_sql(f"grant insert on {ident(table)} to {ident(reader)}")
        await conn.exec_driver_sql(
            f"alter default privileges in schema public grant select on tables to {ident(reader)}"
        )
        await conn.commit()


async def migrate_tenant_database(
    settings: Settings, server: ServerAddress, database: str, owner: str
) -> str | None:
    """Upgrade the tenant chain in one tenant database, as its owner role."""
    url = at_server(provisioner_url(settings), server, database)
    async with one_connection(url, settings) as conn:
        await set_role(conn, owner)
        return await migrator.upgrade(conn, "tenant")


async def tenant_queue(settings: Settings, slug: str, *, declare: bool) -> None:
    """Declare (or delete) the tenant's queue; both are idempotent."""
    names = Names(settings.namespace)
    connection = await connect(settings, name="provisioner", role=BrokerRole.TOPOLOGY)
    try:
        if declare:
            await topology.declare_tenant_queue(connection, names, slug)
        else:
            await topology.delete_tenant_queue(connection, names, slug)
    finally:
        await connection.close()


async def ensure_default_tenant(settings: Settings) -> registry.TenantRecord:
    """Single-tenant mode: the one tenant lives in the registry's own database, its tables owned
    by its own role (not the provisioner), like any tenant's."""
    names = Names(settings.namespace)
    owner = names.tenant_owner_role(DEFAULT_TENANT)
    database = settings.registry_database
    async with registry_connection(settings) as conn:
        existing = await registry.get_tenant(conn, DEFAULT_TENANT)
        if existing is None:
            tenant_id = await records.insert_tenant(
                conn,
                slug=DEFAULT_TENANT,
                name="Default tenant",
                placement=DEFAULT_PLACEMENT,
                db_name=database,
            )
            await conn.commit()
        else:
            tenant_id = existing.id
    async with registry_connection(settings) as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await ensure_owner_role(conn, owner)
        await conn.exec_driver_sql(f"grant connect on database {ident(database)} to {ident(owner)}")
        await conn.exec_driver_sql(f"grant usage, create on schema public to {ident(owner)}")
    await tenant_queue(settings, DEFAULT_TENANT, declare=True)
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, DEFAULT_TENANT)
        assert record is not None and record.placement is not None
        server = ServerAddress(record.placement.host, record.placement.port)
        await credential_admin(settings).register(DEFAULT_TENANT, server, database)
        if record.status == TenantStatus.PROVISIONING:
            await records.set_status(conn, tenant_id, TenantStatus.ACTIVE)
            await conn.commit()
            record = await registry.get_tenant(conn, DEFAULT_TENANT)
            assert record is not None
    return record


async def set_tenant_status(
    settings: Settings, slug: str, status: TenantStatus
) -> registry.TenantRecord:
    """Suspend (`status='suspended'`) or resume (`'active'`) a tenant."""
    if status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
        raise ValueError(status)
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, slug)
        if record is None:
            raise TenantNotFound(slug)
        if record.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            raise ProvisioningError(
                slug,
                f"tenant {slug!r} is {record.status}; only active or suspended tenants "
                "can be suspended or resumed",
            )
        if record.status != status:
            await records.set_status(conn, record.id, status)
            await conn.commit()
            log.info("tenant.status", tenant=slug, status=status)
        updated = await registry.get_tenant(conn, slug)
    assert updated is not None
    return updated


async def delete_tenant(settings: Settings, slug: str) -> registry.TenantRecord:
    """Drop a tenant's database and owner role, then its registry rows (last, so an interrupted
    delete is finished by running it again)."""
    require_multitenant(settings, "tenant delete")
    names = Names(settings.namespace)
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, slug)
        if record is None:
            raise TenantNotFound(slug)
        if record.move is not None:
            raise ProvisioningError(
                slug,
                f"tenant {slug!r} is moving to {record.move.target!r} ({record.move.step}): "
                f"finish the move (`siloflow tenant move {slug}`) or roll it back (`--abort`) "
                "before deleting it",
            )
        await records.set_status(conn, record.id, TenantStatus.DELETING)
        await conn.commit()
        if record.placement is not None:
            server = ServerAddress(record.placement.host, record.placement.port)
            revoked = await credential_admin(settings).unregister(slug, server, record.db_name)
            log.info("tenant.logins_revoked", tenant=slug, logins=revoked)
            url = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
            async with one_connection(url, settings, autocommit=True) as admin:
                await drop_database(admin, record.db_name)
                await drop_role(admin, names.tenant_owner_role(slug))
                await drop_role(admin, names.tenant_reader_role(slug))
        await tenant_queue(settings, slug, declare=False)
        await records.delete_tenant(conn, record.id)
        await conn.commit()
    log.info("tenant.deleted", tenant=slug, database=record.db_name)
    return record
