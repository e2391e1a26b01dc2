"""A tenant's own audit trail, in its silo: write an entry, read entries back (newest first)."""

from __future__ import annotations

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.audit import Entry, Recorded, Where, read_back
from services.core.silo.models import audit_log


async def record(conn: AsyncConnection, entry: Entry) -> None:
    """Keep the entry and commit. The connection may be a read-only session's (the API's reader
    login): this one transaction is opened read-write, and the reader may write only here."""
    if conn.in_transaction():
        await conn.commit()
    await conn.execute(text("set transaction read write"))
    await conn.execute(insert(audit_log).values(**entry.row()))
    await conn.commit()


async def entries(conn: AsyncConnection, tenant: str, *, limit: int) -> list[Recorded]:
    """The tenant's newest entries."""
    query = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
    rows = (await conn.execute(query)).mappings().all()
    return [read_back(row, Where.SILO, tenant) for row in rows]
