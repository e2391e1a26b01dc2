"""Reading what the systems under bench did: commits in the tenant databases, sessions under
tenant logins, and the router's own metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.core.settings import Settings
from services.router.directory import RouterDirectory


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


@dataclass
class RouterScrape:
    """The router's lookup histogram and counters at one moment."""

    buckets: dict[str, list[tuple[float, float]]]  # result -> (le, cumulative count)
    lookups: dict[str, float]
    cache_hosts: float


async def scrape_router(port: int) -> RouterScrape:
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


async def lookup_probe(
    settings: Settings, hosts: list[uuid.UUID], rounds: int = 5
) -> dict[str, Any]:
    """Router lookups timed one by one in this process while nothing else runs: the router's own
    RouterDirectory against the real registry. Each host's first lookup is a miss (an indexed
    query of the registry); then `rounds` passes of warm lookups (the cache)."""
    directory = RouterDirectory(settings)
    await directory.start()
    misses: list[float] = []
    hits: list[float] = []
    try:
        for host in hosts:
            started = time.perf_counter()
            await directory.lookup(host)
            misses.append(time.perf_counter() - started)
        for _ in range(rounds):
            for host in hosts:
                started = time.perf_counter()
                await directory.lookup(host)
                hits.append(time.perf_counter() - started)
    finally:
        await directory.close()
    return {
        "router_probe_hosts": len(hosts),
        "router_probe_miss_p99_ms": round(_percentile(misses, 0.99) * 1000, 3),
        "router_probe_warm_p50_ms": round(_percentile(hits, 0.50) * 1000, 4),
        "router_probe_warm_p99_ms": round(_percentile(hits, 0.99) * 1000, 4),
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0
