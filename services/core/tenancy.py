"""The routing seam: turns a tenant (or a host, through its binding) into an engine for that
tenant's own database, or raises a named error. It never falls back to another database, and it
checks on every new connection that it landed in the database it meant to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import structlog
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core import registry
from services.core.credentials import CredentialSource, TenantLogin
from services.core.db import make_engine
from services.core.engine_cache import EngineCache
from services.core.errors import (
    DatabaseUnavailable,
    HostNotBound,
    NoPlacement,
    TenantNotActive,
    TenantNotFound,
    TenantSuspended,
)
from services.core.pgadmin import ident
from services.core.registry import TenantRecord
from services.core.settings import Settings

log = structlog.get_logger(__name__)


def routable(record: TenantRecord | None, wanted: str) -> TenantRecord:
    """The tenant if reports may be committed to it now; otherwise the error that says why."""
    if record is None:
        raise TenantNotFound(wanted)
    if record.status == "suspended":
        raise TenantSuspended(record.slug)
    if record.status != "active":
        raise TenantNotActive(record.slug, record.status)
    if record.placement is None:
        raise NoPlacement(record.slug)
    return record


class TenantDirectory(Protocol):
    """Where tenant and binding facts come from (the registry; later a cached view of it)."""

    async def tenant(self, slug: str) -> TenantRecord | None: ...

    async def tenant_of_host(self, host_id: uuid.UUID) -> TenantRecord | None: ...


class RegistryDirectory:
    """Reads tenants and bindings straight from the registry database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError, OSError) as exc:
            raise DatabaseUnavailable("the registry", str(exc).splitlines()[0]) from exc

    async def tenant(self, slug: str) -> TenantRecord | None:
        async with self._connect() as conn:
            return await registry.get_tenant(conn, slug)

    async def tenant_of_host(self, host_id: uuid.UUID) -> TenantRecord | None:
        async with self._connect() as conn:
            return await registry.tenant_of_host(conn, host_id)


class TenantDatabases:
    """Engines for tenant databases, bounded and closed when idle."""

    def __init__(
        self, settings: Settings, directory: TenantDirectory, credentials: CredentialSource
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._credentials = credentials
        self._engines: EngineCache[uuid.UUID, AsyncEngine] = EngineCache(
            max_size=settings.max_tenant_engines,
            idle_s=settings.engine_idle_s,
            close=_dispose,
        )

    @property
    def open_engines(self) -> int:
        return len(self._engines)

    async def resolve(self, slug: str) -> TenantRecord:
        return routable(await self._directory.tenant(slug), slug)

    async def resolve_host(self, host_id: uuid.UUID) -> TenantRecord:
        record = await self._directory.tenant_of_host(host_id)
        if record is None:
            raise HostNotBound(host_id)
        return routable(record, record.slug)

    async def engine(self, tenant: str | TenantRecord) -> AsyncEngine:
        """The engine of an active tenant's database (looked up again if given a slug)."""
        record = (
            await self.resolve(tenant) if isinstance(tenant, str) else routable(tenant, tenant.slug)
        )
        login = await self._credentials.login_for(record)
        return await self._engines.get(
            record.id, login.fingerprint, lambda: self._open(record, login)
        )

    async def engine_for_host(self, host_id: uuid.UUID) -> tuple[TenantRecord, AsyncEngine]:
        record = await self.resolve_host(host_id)
        return record, await self.engine(record)

    @asynccontextmanager
    async def begin(self, tenant: str | TenantRecord) -> AsyncIterator[AsyncConnection]:
        """A transaction in the tenant's database."""
        engine = await self.engine(tenant)
        try:
            async with engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError, OSError) as exc:
            name = tenant if isinstance(tenant, str) else tenant.slug
            raise DatabaseUnavailable(
                f"tenant {name}'s database", str(exc).splitlines()[0]
            ) from exc

    async def sweep(self) -> int:
        return await self._engines.sweep()

    async def close(self) -> None:
        await self._engines.close()

    def _open(self, record: TenantRecord, login: TenantLogin) -> AsyncEngine:
        engine = make_engine(login.url, self._settings, pool_size=self._settings.tenant_pool_size)
        expected_db, role = record.db_name, login.role

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Runs once per physical connection: act as the tenant's owner, and refuse a
            # connection that reached any other database than this tenant's.
            async def prepare(conn: Any) -> None:
                await conn.execute(f"set role {ident(role)}")
                actual = await conn.fetchval("select current_database()")
                if actual != expected_db:
                    raise DBAPIError(
                        "tenant connection check",
                        None,
                        RuntimeError(f"connected to {actual!r}, expected {expected_db!r}"),
                    )

            dbapi_conn.run_async(prepare)

        log.debug("tenant.engine.opened", tenant=record.slug, database=record.db_name)
        return engine


async def _dispose(engine: AsyncEngine) -> None:
    await engine.dispose()
