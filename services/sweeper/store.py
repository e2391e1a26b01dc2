"""The sweeper's SQL, per tenant database: mark silent hosts down, prune old agent_messages in
small batches (short transactions, no long locks on a busy table)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.domain import HostStatus

_MARK_DOWN = f"""
    update hosts set status = '{HostStatus.DOWN}'
    where status <> '{HostStatus.DOWN}'
      and coalesce(last_seen_at, first_seen_at) < now() - cast(:silence as interval)
"""
_PRUNE_BATCH = """
    delete from agent_messages where message_id in (
        select message_id from agent_messages
        where committed_at < now() - cast(:age as interval)
        limit :batch
    )
"""


async def mark_down(engine: AsyncEngine, silence: timedelta) -> int:
    """Hosts silent for longer than `silence` are `down`; returns how many changed."""
    async with engine.begin() as conn:
        result = await conn.execute(text(_MARK_DOWN), {"silence": silence})
    return int(result.rowcount or 0)


async def prune(engine: AsyncEngine, age: timedelta, batch: int) -> int:
    """Delete agent_messages committed longer than `age` ago, `batch` rows per transaction."""
    total = 0
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(text(_PRUNE_BATCH), {"age": age, "batch": batch})
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < batch:
            return total
