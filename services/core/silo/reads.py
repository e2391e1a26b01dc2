"""What the API reads from a tenant's silo: plain queries on one tenant connection (the caller
opened it for that tenant, read-only), returning rows; no decision here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.silo.models import hosts


async def host_page(
    conn: AsyncConnection, *, limit: int, after: uuid.UUID | None
) -> tuple[list[Row[Any]], uuid.UUID | None]:
    """Up to `limit` hosts in id order after `after`, and the `after` of the next page."""
    query = select(hosts).order_by(hosts.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(hosts.c.id > after)
    rows = list((await conn.execute(query)).all())
    more = len(rows) > limit
    return rows[:limit], rows[limit - 1].id if more else None


async def host(conn: AsyncConnection, host_id: uuid.UUID) -> Row[Any] | None:
    """One host's row, if the tenant has it."""
    return (await conn.execute(select(hosts).where(hosts.c.id == host_id))).first()
