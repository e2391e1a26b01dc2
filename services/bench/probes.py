"""Reading what the systems under bench did: commits in the tenant databases, sessions under
tenant logins, and the router's own metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Commits:
    """What the databases hold of a phase: ids, each one's latency, the last commit (epoch s)."""

    ids: set[str]
    latencies: list[float]
    last_commit: float


async def read_commits(pg: str, databases: list[str], table: str, since: datetime) -> Commits:
    """What the databases hold of the reports sent since `since`."""
    seen = Commits(set(), [], 0.0)
    limit = asyncio.Semaphore(8)

    async def one(database: str) -> None:
        async with limit:
            conn = await asyncpg.connect(f"{pg}/{database}")
            try:
                rows = await conn.fetch(
                    "select message_id::text, extract(epoch from committed_at - sent_at), "
                    f"extract(epoch from committed_at) from {table} where sent_at >= $1",
                    since,
                )
            finally:
                await conn.close()
        for row in rows:
            seen.ids.add(row[0])
            seen.latencies.append(float(row[1]))
            seen.last_commit = max(seen.last_commit, float(row[2]))

    await asyncio.gather(*(one(d) for d in databases))
    return seen


async def tenant_sessions(admin_dsn: str, login_prefix: str) -> int:
    """Sessions open under tenant logins now (siloflow's services; 0 for the baseline,
    which connects as the superuser)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        return int(
            await conn.fetchval(
                "select count(*) from pg_stat_activity where starts_with(usename, $1)",
                login_prefix,
            )
        )
    finally:
        await conn.close()


async def router_figures(port: int) -> dict[str, Any]:
    """The router's own figures, scraped from its /metrics: lookup latency (p99 as the
    histogram bucket it falls in), cache hit ratio and size."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    buckets: dict[str, list[tuple[float, float]]] = {"hit": [], "miss": []}
    lookups: dict[str, float] = {}
    cache_hosts = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "siloflow_router_lookup_seconds_bucket":
                result = sample.labels["result"]
                buckets[result].append((float(sample.labels["le"]), sample.value))
            elif sample.name == "siloflow_router_lookups_total":
                lookups[sample.labels["result"]] = sample.value
            elif sample.name == "siloflow_router_cache_hosts":
                cache_hosts = sample.value
    hits, misses = lookups.get("hit", 0.0), lookups.get("miss", 0.0)
    return {
        "router_lookups": int(hits + misses),
        # Warm: answered from the cache. A miss is a registry round trip (first sight of a
        # host, or after a change notice).
        "router_lookup_p99_warm_at_most_s": _p99(buckets["hit"]),
        "router_lookup_p99_miss_at_most_s": _p99(buckets["miss"]),
        "router_cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "router_cache_hosts": int(cache_hosts),
    }


def _p99(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the histogram bucket holding the 99th percentile."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return None
    return next(le for le, count in buckets if count >= 0.99 * total)
