"""The routing seam: turns a tenant (or a host, through its binding) into an engine for that
tenant's own database, or raises a named error. It never falls back to another database, and it
checks on every new connection that it landed in the database it meant to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from services.core.db import make_engine
from services.core.errors import (
    DatabaseUnavailable,
    HostNotBound,
    HostRevoked,
    NoPlacement,
    ResolutionError,
    TenantDeleting,
    TenantMoving,
    TenantNotActive,
    TenantNotFound,
    TenantSuspended,
)
from services.core.failures import CONNECTION_ERRORS, root_cause
from services.core.outcomes import Reason
from services.core.pgadmin import ident
from services.core.registry import queries as registry
from services.core.registry.queries import TenantRecord
from services.core.routing import Binding, Unroutable, admits, resolve
from services.core.settings import Settings
from services.core.silo.credentials.issuers import credential_source
from services.core.silo.credentials.seam import CredentialSource, TenantLogin
from services.core.silo.engines import EngineCache

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def _live_connection(engine: AsyncEngine) -> AsyncConnection:
    """A connection from the pool, passing over any whose socket the server closed (a restart,
    a terminated backend): asyncpg notices the close without a round trip, where a pre-ping
    costs three."""
    for _ in range(engine.pool.size() + 1):  # type: ignore[attr-defined]
        conn = await engine.connect().start()
        raw = await conn.get_raw_connection()
        if not raw.driver_connection.is_closed():  # type: ignore[union-attr]
            return conn
        await conn.invalidate()
        await conn.close()
    return await engine.connect().start()


async def _live_driver(engine: AsyncEngine) -> PoolProxiedConnection:
    """A pooled driver connection, passing over any whose socket the server closed (as
    `_live_connection`, without a SQLAlchemy connection around it)."""
    for _ in range(engine.pool.size() + 1):  # type: ignore[attr-defined]
        pooled = await engine.raw_connection()
        if pooled.driver_connection is not None and not pooled.driver_connection.is_closed():
            return pooled
        await greenlet_spawn(pooled.invalidate)
        await greenlet_spawn(pooled.close)
    return await engine.raw_connection()


async def _drop_if_dead(conn: AsyncConnection, exc: BaseException) -> None:
    """A connection that failed for being dead leaves the pool instead of going back to it."""
    if isinstance(root_cause(exc), CONNECTION_ERRORS):
        try:
            await conn.invalidate()
        except Exception as again:  # already unusable: the pool forgets it either way
            log.debug("tenant_db.invalidate_failed", error=str(again))


def _server_of(tenant: str | TenantRecord) -> tuple[str, int] | None:
    """The server a tenant's database is on, when the caller gave its record."""
    if isinstance(tenant, TenantRecord) and tenant.placement is not None:
        return tenant.placement.host, tenant.placement.port
    return None


def _refusal(
    decision: Unroutable, record: TenantRecord | None, wanted: str, host_id: uuid.UUID | None
) -> ResolutionError:
    """The named error of the one rule's answer (`routing`), carrying the same reason."""
    reason = decision.reason
    if reason is Reason.NO_TENANT_BINDING or reason is Reason.HOST_REVOKED:
        assert host_id is not None  # only a host's resolution meets its binding
        return HostNotBound(host_id) if reason is Reason.NO_TENANT_BINDING else HostRevoked(host_id)
    if record is None:
        return TenantNotFound(wanted)
    if reason is Reason.TENANT_SUSPENDED:
        return TenantSuspended(record.slug)
    if reason is Reason.TENANT_DELETED:
        return TenantDeleting(record.slug)
    return TenantNotActive(record.slug, record.status)


def _committable(record: TenantRecord) -> TenantRecord:
    """A tenant the rule admits, if its database may be written now: what a database needs
    beyond the rule (a placement; no move holding its reports)."""
    if record.placement is None:
        raise NoPlacement(record.slug)
    if record.move is not None and record.move.step.paused:
        raise TenantMoving(record.slug, record.move.step)
    return record


def routable(record: TenantRecord | None, wanted: str) -> TenantRecord:
    """The tenant if reports may be committed to it now; otherwise the error that says why."""
    decision = admits(record, wanted)
    if isinstance(decision, Unroutable):
        raise _refusal(decision, record, wanted, None)
    assert record is not None
    return _committable(record)


def routable_host(
    host_id: uuid.UUID, binding: Binding | None, record: TenantRecord | None
) -> TenantRecord:
    """The host's tenant if its reports may be committed to it now (the router's rule, then
    the database's needs); otherwise the error that says why."""
    decision = resolve(host_id, binding, record)
    if isinstance(decision, Unroutable):
        # A binding to a tenant the registry does not know names that tenant's id.
        wanted = str(binding.tenant_id) if binding is not None else str(host_id)
        raise _refusal(decision, record, wanted, host_id)
    assert record is not None
    return _committable(record)


class TenantDirectory(Protocol):
    """Where tenant and binding facts come from (the registry; later a cached view of it)."""

    async def tenant(self, slug: str) -> TenantRecord | None:
        """The tenant of this slug, if any."""
        ...

    async def binding_of(self, host_id: uuid.UUID) -> tuple[Binding | None, TenantRecord | None]:
        """The host's binding (revoked ones too) and its tenant, as far as they exist."""
        ...


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
        """The tenant of this slug, from the registry."""
        async with self._connect() as conn:
            return await registry.get_tenant(conn, slug)

    async def binding_of(self, host_id: uuid.UUID) -> tuple[Binding | None, TenantRecord | None]:
        """The host's binding and its tenant, from the registry."""
        async with self._connect() as conn:
            return await registry.binding_of(conn, host_id)


class TenantDatabases:
    """Engines for tenant databases, bounded and closed when idle, each logged in with the
    tenant's current short-lived login. A new login (a rotation) means a new engine; the old
    one is retired: its connections finish what they are doing and are then closed."""

    def __init__(
        self,
        settings: Settings,
        directory: TenantDirectory,
        credentials: CredentialSource | None = None,
        *,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        """`server_settings`: session settings for every tenant connection this process opens
        (the workers tune their commits' planning with them)."""
        self._settings = settings
        self._server_settings = dict(server_settings or {})
        self._directory = directory
        self._credentials = credentials or credential_source(settings)
        self._engines: EngineCache[uuid.UUID, AsyncEngine] = EngineCache(
            max_size=settings.max_tenant_engines,
            idle_s=settings.engine_idle_s,
            close=self._retire,
        )
        # Connections in use at once, across all tenants. The engine cache bounds the pools,
        # but an evicted engine keeps the connections still in use until they are returned: a
        # worker serving 500 tenants, each committing at once, opened 500 connections and ran
        # the server out of them. With this, a process holds at most twice max_tenant_engines x
        # tenant_pool_size: the cached pools, and retired ones still finishing.
        self._in_use = asyncio.Semaphore(settings.max_tenant_engines * settings.tenant_pool_size)
        self._retiring: list[AsyncEngine] = []

    @property
    def open_engines(self) -> int:
        """Tenant engines open now."""
        return len(self._engines)

    async def resolve(self, slug: str) -> TenantRecord:
        """The tenant of this slug, if it may be reached; else the error saying why not."""
        return routable(await self._directory.tenant(slug), slug)

    async def resolve_host(self, host_id: uuid.UUID) -> TenantRecord:
        """The tenant this host is bound to, if it may be reached; else the error saying why not."""
        return routable_host(host_id, *await self._directory.binding_of(host_id))

    async def engine(self, tenant: str | TenantRecord) -> AsyncEngine:
        """The engine of an active tenant's database (looked up again if given a slug)."""
        record = (
            await self.resolve(tenant) if isinstance(tenant, str) else routable(tenant, tenant.slug)
        )
        engine, _ = await self._engine(record)
        return engine

    async def _engine(self, record: TenantRecord) -> tuple[AsyncEngine, TenantLogin]:
        await self._reap()
        login = await self._credentials.login_for(record)
        engine = await self._engines.get(
            record.id, login.fingerprint, lambda: self._open(record, login)
        )
        return engine, login

    async def connect(self, tenant: str | TenantRecord) -> AsyncConnection:
        """A started connection to the tenant's database (the caller closes it). A login the
        server refuses (expired, revoked) is evicted and a new one tried, once."""
        return await self._checked_out(tenant, _live_connection)

    async def _checked_out(
        self, tenant: str | TenantRecord, take: Callable[[AsyncEngine], Awaitable[T]]
    ) -> T:
        """What `take` gets of the tenant's engine; a login the server refuses is evicted and a
        new one tried, once."""
        record = (
            await self.resolve(tenant) if isinstance(tenant, str) else routable(tenant, tenant.slug)
        )
        for attempt in (1, 2):
            engine, login = await self._engine(record)
            try:
                return await take(engine)
            except Exception as exc:
                if attempt == 2 or not _login_refused(exc):
                    raise
                log.warning(
                    "credentials.login_refused",
                    tenant=record.slug,
                    login=login.username,
                    error=str(root_cause(exc)).splitlines()[0],
                )
                await self._credentials.evict(record, login)
                await self._engines.discard(record.id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _available(
        self, tenant: str | TenantRecord, take: Callable[[AsyncEngine], Awaitable[T]]
    ) -> T:
        """`_checked_out`, where any failure to get a connection (server down, login refused or
        not issued, the tenant no longer routable) is DatabaseUnavailable: it says nothing of
        the work the caller meant to do with it."""
        try:
            return await self._checked_out(tenant, take)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            name = tenant if isinstance(tenant, str) else tenant.slug
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise DatabaseUnavailable(
                f"tenant {name}'s database", detail, server=_server_of(tenant)
            ) from exc

    async def engine_for_host(self, host_id: uuid.UUID) -> tuple[TenantRecord, AsyncEngine]:
        """The host's tenant and the engine of its database."""
        record = await self.resolve_host(host_id)
        return record, await self.engine(record)

    @asynccontextmanager
    async def session(self, tenant: str | TenantRecord) -> AsyncIterator[AsyncConnection]:
        """A connection to the tenant's database, waiting its turn among the process's bounded
        connections in use. Not getting one (server down, login refused or not issued, the
        tenant no longer routable) raises DatabaseUnavailable: it says nothing of the work the
        caller meant to do with it."""
        async with self._in_use:
            conn = await self._available(tenant, _live_connection)
            try:
                yield conn
            except BaseException as exc:
                await _drop_if_dead(conn, exc)
                raise
            finally:
                await conn.close()

    @asynccontextmanager
    async def begin(self, tenant: str | TenantRecord) -> AsyncIterator[AsyncConnection]:
        """A transaction in the tenant's database (a lost connection is DatabaseUnavailable)."""
        name = tenant if isinstance(tenant, str) else tenant.slug
        async with self._in_use:
            conn: AsyncConnection | None = None
            try:
                conn = await self.connect(tenant)
                async with conn.begin():
                    yield conn
            except (OperationalError, InterfaceError, OSError) as exc:
                raise DatabaseUnavailable(
                    f"tenant {name}'s database",
                    str(exc).splitlines()[0],
                    server=_server_of(tenant),
                ) from exc
            finally:
                if conn is not None:
                    await conn.close()

    @asynccontextmanager
    async def driver(self, tenant: TenantRecord) -> AsyncIterator[asyncpg.Connection]:
        """The driver's own connection to the tenant's database, for work that is all asyncpg
        calls (the workers' commits): from the same pool, checked the same way, and under the
        same bound as `session`, without a SQLAlchemy connection around it (half the cost of
        a checkout). Not getting one raises DatabaseUnavailable; a connection that fails for
        being dead leaves the pool."""
        async with self._in_use:
            pooled = await self._available(tenant, _live_driver)
            try:
                yield pooled.driver_connection
            except BaseException as exc:
                if isinstance(root_cause(exc), CONNECTION_ERRORS):
                    await greenlet_spawn(pooled.invalidate)
                raise
            finally:
                await greenlet_spawn(pooled.close)  # back to the pool (or closed, if invalid)

    async def sweep(self) -> int:
        """Close retired and idle engines; returns how many were closed."""
        await self._reap()
        return await self._engines.sweep()

    async def close(self) -> None:
        """Close every engine, then revoke this process's logins (ending their sessions)."""
        await self._engines.close()
        for engine in self._retiring:
            await engine.dispose()
        self._retiring.clear()
        await self._credentials.close()

    async def _retire(self, engine: AsyncEngine) -> None:
        """Close an engine that is no longer current once nothing uses it: a transaction begun
        under the old login finishes on its connection."""
        self._retiring.append(engine)
        await self._reap()

    async def _reap(self) -> None:
        # Take the idle ones off the list before the first await: concurrent reaps (one per
        # tenant's batch) must not dispose, or try to remove, the same engine twice.
        idle = [e for e in self._retiring if e.pool.checkedout() == 0]  # type: ignore[attr-defined]
        self._retiring = [e for e in self._retiring if e not in idle]
        for engine in idle:
            await engine.dispose()

    def _open(self, record: TenantRecord, login: TenantLogin) -> AsyncEngine:
        # No pre-ping: it cost three round trips of every worker batch (a third of them). A
        # connection that died in the pool fails its first statement instead, and `session`
        # and `begin` drop it, so the retry gets a fresh one.
        engine = make_engine(
            login.url,
            self._settings,
            pool_size=self._settings.tenant_pool_size,
            pre_ping=False,
            server_settings=self._server_settings,
        )
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


def _login_refused(exc: BaseException) -> bool:
    """The server refused the login itself (bad or expired password, no such role, no CONNECT),
    as opposed to being unreachable."""
    return isinstance(
        root_cause(exc),
        asyncpg.InvalidAuthorizationSpecificationError
        | asyncpg.InvalidPasswordError
        | asyncpg.InsufficientPrivilegeError,
    )
