"""Reading what the systems under bench did: commits in the tenant databases, sessions under
tenant logins, and the router's own metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Commits:
    """What the databases hold of a phase: ids, each one's latency (from the report's sent_at to
    the end of the commit that made it durable), the last commit's end (epoch s)."""

    ids: set[str]
    latencies: list[float]
    last_commit: float
    kinds: list[str] = field(default_factory=list)  # each latency's report kind, in order


# Time to the end of the commit: PostgreSQL's commit timestamp of the transaction that wrote the
# row (its xmin; `track_commit_timestamp = on`), which both systems' rows carry alike. Not the
# `committed_at` column: that is the transaction's start, before the typed writes and the COPY.
_ROWS = """
    select message_id::text,
           extract(epoch from pg_xact_commit_timestamp(xmin) - sent_at),
           extract(epoch from pg_xact_commit_timestamp(xmin)),
           kind
    from {table} where committed_at >= $1
"""
_COUNT = "select count(*) from {table} where committed_at >= $1"


class Probe:
    """The bench's view of the databases, costing the pipeline as little as it can and none of
    its figures: one long-lived session per database (and one on the server, for sessions), so
    polling forks no backend; each poll asks only a count; and the CPU those sessions' backends
    spend is known by their pids and subtracted from PostgreSQL's (`cpu_s`). The rows, with their
    commit timestamps, are read once a phase is over, after its CPU was taken.

    With more databases than `PER_DATABASE_MAX`, sessions are opened for a read and closed
    after it (a thousand idle sessions would be load of their own); then the phase waits for the
    broker's queues to empty before counting, and counts after its CPU was read."""

    PER_DATABASE_MAX = 100

    def __init__(self, pg: str, databases: list[str], table: str, admin_dsn: str) -> None:
        self._pg = pg
        self._databases = databases
        self._table = table
        self._admin_dsn = admin_dsn
        self._sessions: dict[str, asyncpg.Connection] = {}
        self._admin: asyncpg.Connection | None = None
        self.pids: set[int] = set()

    @property
    def long_lived(self) -> bool:
        """Whether the probe keeps a session per database (few databases) or opens them per read."""
        return len(self._databases) <= self.PER_DATABASE_MAX

    async def open(self) -> Probe:
        """Open the probe's sessions, noting their backends' pids."""
        self._admin = await asyncpg.connect(self._admin_dsn)
        self.pids.add(self._admin.get_server_pid())
        if self.long_lived:
            for database in self._databases:
                conn = await asyncpg.connect(f"{self._pg}/{database}")
                self._sessions[database] = conn
                self.pids.add(conn.get_server_pid())
        return self

    async def close(self) -> None:
        """Close the probe's sessions."""
        for conn in [*self._sessions.values(), *([self._admin] if self._admin else [])]:
            await conn.close()
        self._sessions.clear()
        self._admin = None

    async def __aenter__(self) -> Probe:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _each(self, query: str, *args: Any) -> list[list[asyncpg.Record]]:
        if self.long_lived:
            return [await conn.fetch(query, *args) for conn in self._sessions.values()]
        limit = asyncio.Semaphore(8)

        async def one(database: str) -> list[asyncpg.Record]:
            async with limit:
                conn = await asyncpg.connect(f"{self._pg}/{database}")
                try:
                    return list(await conn.fetch(query, *args))
                finally:
                    await conn.close()

        return list(await asyncio.gather(*(one(d) for d in self._databases)))

    async def count(self, since: datetime) -> int:
        """Reports committed since `since` (by the transaction's start, which is later)."""
        found = await self._each(_COUNT.format(table=self._table), since)
        return sum(int(rows[0][0]) for rows in found)

    async def commits(self, since: datetime) -> Commits:
        """Every report committed since `since`, with its latency to its commit's end."""
        seen = Commits(set(), [], 0.0)
        for rows in await self._each(_ROWS.format(table=self._table), since):
            for row in rows:
                seen.ids.add(row[0])
                seen.latencies.append(float(row[1]))
                seen.last_commit = max(seen.last_commit, float(row[2]))
                seen.kinds.append(str(row[3]))
        return seen

    async def tenant_sessions(self, login_prefix: str) -> int:
        """Sessions open under tenant logins now (siloflow's services; 0 for the baseline,
        which connects as the superuser)."""
        assert self._admin is not None, "open the probe first"
        return int(
            await self._admin.fetchval(
                "select count(*) from pg_stat_activity where starts_with(usename, $1)",
                login_prefix,
            )
        )


async def commit_timestamps_on(admin_dsn: str) -> bool:
    """Whether the server records commit timestamps (the bench's latencies need them)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        return str(await conn.fetchval("show track_commit_timestamp")) == "on"
    finally:
        await conn.close()


@dataclass
class RouterScrape:
    """The router's lookup histogram and counters at one moment."""

    buckets: dict[str, list[tuple[float, float]]]  # result -> (le, cumulative count)
    lookups: dict[str, float]
    cache_hosts: float


async def scrape_router(port: int) -> RouterScrape:
    """The router's lookup metrics, read from its /metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    scrape = RouterScrape({"hit": [], "miss": []}, {}, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "siloflow_router_lookup_seconds_bucket":
                scrape.buckets[sample.labels["result"]].append(
                    (float(sample.labels["le"]), sample.value)
                )
            elif sample.name == "siloflow_router_lookups_total":
                scrape.lookups[sample.labels["result"]] = sample.value
            elif sample.name == "siloflow_router_cache_hosts":
                scrape.cache_hosts = sample.value
    return scrape


def router_figures(end: RouterScrape, steady_from: RouterScrape | None = None) -> dict[str, Any]:
    """Lookup latency (p99 as the histogram bucket it falls in), cache hit ratio and size; with
    `steady_from`, also the warm p99 of the lookups since then alone (the fixed-rate phase, where
    the cores are not saturated and a lookup's time is its own, not the scheduler's)."""
    hits, misses = end.lookups.get("hit", 0.0), end.lookups.get("miss", 0.0)
    figures = {
        "router_lookups": int(hits + misses),
        # Warm: answered from the cache. A miss is a registry round trip (first sight of a
        # host, or after a change notice).
        "router_lookup_p99_warm_at_most_s": _p99(end.buckets["hit"]),
        "router_lookup_p99_miss_at_most_s": _p99(end.buckets["miss"]),
        "router_cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "router_cache_hosts": int(end.cache_hosts),
    }
    if steady_from is not None:
        before = dict(steady_from.buckets["hit"])
        since = [(le, count - before.get(le, 0.0)) for le, count in end.buckets["hit"]]
        figures["router_lookup_p99_warm_steady_at_most_s"] = _p99(since)
    return figures


def _p99(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the histogram bucket holding the 99th percentile."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return None
    return next(le for le, count in buckets if count >= 0.99 * total)
