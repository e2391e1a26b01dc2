"""The registry's audit trail: write an entry, read entries back (newest first)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.audit import Entry, Recorded, Where, read_back
from services.core.registry.models import audit


async def record(conn: AsyncConnection, entry: Entry) -> None:
    """Keep the entry (in the caller's transaction)."""
    await conn.execute(insert(audit).values(**entry.row(), tenant=entry.tenant))


async def entries(conn: AsyncConnection, *, tenant: str | None, limit: int) -> list[Recorded]:
    """The newest entries about the tenant (with None: about every tenant and none)."""
    query = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
    if tenant is not None:
        query = query.where(audit.c.tenant == tenant)
    rows = (await conn.execute(query)).mappings().all()
    return [read_back(row, Where.REGISTRY, row["tenant"]) for row in rows]
