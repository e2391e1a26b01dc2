"""Database URLs and engines. Every connection siloflow opens is built here, so the driver, the
connect timeout and the application name are decided once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.core.errors import DatabaseUnavailable
from services.core.names import Names
from services.core.settings import Settings

APPLICATION_NAME = "siloflow"


@dataclass(frozen=True)
class ServerAddress:
    """Where a PostgreSQL server listens (a placement, or the registry's server)."""

    host: str
    port: int


def asyncpg_url(dsn: str | URL) -> URL:
    """A `postgresql://` DSN as SQLAlchemy's asyncpg URL."""
    return make_url(str(dsn) if isinstance(dsn, URL) else dsn).set(drivername="postgresql+asyncpg")


def server_of(dsn: str) -> ServerAddress:
    """The server a DSN names."""
    parts = urlsplit(dsn)
    return ServerAddress(host=parts.hostname or "127.0.0.1", port=parts.port or 5432)


def provisioner_url(settings: Settings, database: str | None = None) -> URL:
    """The provisioner's identity on the registry's server (or `provisioner_dsn` as given)."""
    if settings.provisioner_dsn is not None:
        url = asyncpg_url(settings.provisioner_dsn)
    else:
        password = settings.provisioner_password
        url = asyncpg_url(settings.registry_url).set(
            username=Names(settings.namespace).provisioner_role,
            password=password.get_secret_value() if password is not None else None,
        )
    return url.set(database=database) if database is not None else url


def at_server(url: URL, server: ServerAddress, database: str) -> URL:
    """The same identity on another server and database (a tenant's placement)."""
    return url.set(host=server.host, port=server.port, database=database)


def make_engine(
    url: URL,
    settings: Settings,
    *,
    pool_size: int | None = None,
    pre_ping: bool = True,
    server_settings: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine; `pool_size=None` means no pooling (one-off admin work). `pre_ping`
    tests each connection as it leaves the pool: three round trips (begin, `;`, rollback) with
    asyncpg, so a hot path turns it off and drops a connection found dead in use instead.
    `server_settings` are set on each connection as it opens (no round trip of their own)."""
    connect_args = {
        "timeout": settings.connect_timeout_s,
        "server_settings": {"application_name": APPLICATION_NAME, **(server_settings or {})},
    }
    if pool_size is None:
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args, **kwargs)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        connect_args=connect_args,
        **kwargs,
    )


@asynccontextmanager
async def one_connection(
    url: URL, settings: Settings, *, autocommit: bool = False, hint: str = ""
) -> AsyncIterator[AsyncConnection]:
    """A single unpooled connection, closed on exit (admin and migration work). A failure to
    connect raises `DatabaseUnavailable`, with `hint` appended for the operator."""
    engine = make_engine(url, settings)
    try:
        try:
            conn = await engine.connect()
        except (OSError, DBAPIError) as exc:
            raise DatabaseUnavailable(
                describe(url), _reason(exc) + hint, server=(url.host or "", url.port or 5432)
            ) from exc
        try:
            if autocommit:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
        finally:
            await conn.close()
    finally:
        await engine.dispose()


def describe(url: URL) -> str:
    """A database as an operator would name it (never with its password)."""
    return f"database {url.database} on {url.host}:{url.port or 5432} (as {url.username})"


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip() or type(cause).__name__
    return text.splitlines()[0]


def registry_engine(
    settings: Settings, *, pool_size: int = 2, pre_ping: bool = True
) -> AsyncEngine:
    """A small pool on the registry database, as the services read it."""
    return make_engine(
        asyncpg_url(settings.registry_url), settings, pool_size=pool_size, pre_ping=pre_ping
    )
