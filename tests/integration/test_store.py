"""The workers' batch commit on a real tenant database: the newest report per host and state wins
(within a batch and across batches), a report already committed is never applied again, and each
host's last-seen time moves only forward."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.core.migrator import upgrade
from services.workers.handlers import Report
from services.workers.store import Committed, commit_batch
from tests.support import ADMIN_DSN, drop_namespace, new_namespace, pg_base

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
async def tenant_dsn() -> AsyncIterator[str]:
    """A database with the tenant chain at head, removed afterwards."""
    namespace = new_namespace()
    database = f"{namespace}_store"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'create database "{database}"')
    finally:
        await admin.close()
    dsn = f"{pg_base()}/{database}"
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with engine.connect() as conn:
            await upgrade(conn, "tenant")
    finally:
        await engine.dispose()
    try:
        yield dsn
    finally:
        await drop_namespace(namespace)


@pytest.fixture
async def db(tenant_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(tenant_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def heartbeat(host: uuid.UUID, minutes: int, uptime_s: int) -> Report:
    data = {
        "status": "up",
        "agent_version": "1.0",
        "uptime_s": uptime_s,
        "load_1": 0.5,
        "load_5": 0.5,
        "load_15": 0.5,
    }
    return Report(uuid.uuid4(), host, "heartbeat", T0 + timedelta(minutes=minutes), None, data)


def compliance(host: uuid.UUID, minutes: int, benchmark: str) -> Report:
    data: dict[str, Any] = {
        "benchmark_id": benchmark,
        "results": [{"rule_id": "r1", "status": "pass", "severity": "low"}],
    }
    return Report(uuid.uuid4(), host, "compliance", T0 + timedelta(minutes=minutes), None, data)


async def commit(db: asyncpg.Connection, reports: list[Report]) -> Committed:
    async with db.transaction():
        return await commit_batch(db, reports)


async def host_row(db: asyncpg.Connection, host: uuid.UUID) -> asyncpg.Record:
    row = await db.fetchrow("select * from hosts where id = $1", host)
    assert row is not None
    return row


async def test_the_newest_in_a_batch_wins_and_the_later_one_on_a_tie(
    db: asyncpg.Connection,
) -> None:
    host = uuid.uuid4()
    newest, older, tied_first, tied_last = (
        heartbeat(host, 5, 500),
        heartbeat(host, 1, 100),
        heartbeat(host, 9, 901),
        heartbeat(host, 9, 902),
    )
    result = await commit(db, [newest, older])
    assert (result.new, result.duplicates, result.applied) == (2, 0, 1)
    assert (await host_row(db, host))["uptime_s"] == 500
    result = await commit(db, [tied_first, tied_last])
    assert (await host_row(db, host))["uptime_s"] == 902
    recorded = await db.fetchval("select count(*) from agent_messages where host_id = $1", host)
    assert recorded == 4  # the losers are recorded as committed, only not applied


async def test_a_late_older_report_never_overwrites_newer_state(db: asyncpg.Connection) -> None:
    host = uuid.uuid4()
    await commit(db, [heartbeat(host, 10, 1000)])
    late = await commit(db, [heartbeat(host, 2, 200)])
    assert (late.new, late.applied) == (1, 0)
    row = await host_row(db, host)
    assert row["uptime_s"] == 1000
    assert row["last_seen_at"] == T0 + timedelta(minutes=10)  # last seen only moves forward


async def test_a_report_already_committed_is_not_applied_again(db: asyncpg.Connection) -> None:
    host = uuid.uuid4()
    first = heartbeat(host, 1, 100)
    await commit(db, [first])
    await db.execute("update hosts set uptime_s = 0, status = 'down' where id = $1", host)
    again = await commit(db, [first, first])
    assert (again.new, again.duplicates, again.applied) == (0, 2, 0)
    row = await host_row(db, host)
    assert (row["uptime_s"], row["status"]) == (0, "down")  # a redelivery says nothing new
    assert await db.fetchval("select count(*) from agent_messages where host_id = $1", host) == 1


async def test_a_host_marked_down_is_up_again_when_it_reports(db: asyncpg.Connection) -> None:
    host = uuid.uuid4()
    await commit(db, [heartbeat(host, 1, 100)])
    await db.execute("update hosts set status = 'down' where id = $1", host)
    await commit(db, [compliance(host, 3, "cis")])  # any report, not only a heartbeat
    row = await host_row(db, host)
    assert (row["status"], row["last_seen_at"]) == ("up", T0 + timedelta(minutes=3))


async def test_runs_of_different_benchmarks_do_not_replace_each_other(
    db: asyncpg.Connection,
) -> None:
    host = uuid.uuid4()
    result = await commit(db, [compliance(host, 1, "cis"), compliance(host, 2, "stig")])
    assert result.applied == 2
    benchmarks = await db.fetch(
        "select distinct benchmark_id from compliance_results where host_id = $1 order by 1", host
    )
    assert [r["benchmark_id"] for r in benchmarks] == ["cis", "stig"]
