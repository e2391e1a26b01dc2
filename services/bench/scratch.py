"""Scratch tenant databases for the benches that measure the workers' database work alone."""

from __future__ import annotations

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from services.ops.chains import upgrade


async def tenant_database(admin: asyncpg.Connection, admin_dsn: str, name: str) -> str:
    """Create database `name` on the admin DSN's server with the tenant chain at head; its DSN.
    The caller drops it."""
    await admin.execute(f'create database "{name}"')
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as conn:
            await upgrade(conn, "tenant")
    finally:
        await engine.dispose()
    return dsn
