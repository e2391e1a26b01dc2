"""The router's directory at fleet scale, in a process of its own: every host binding of the
registry looked up through the router's real `RouterDirectory`, once cold (a registry query
each, `CONCURRENCY` at a time as a busy router would ask) and once warm (from the cache, one at
a time, nothing else running), and how much the process grew to hold them.

Run by `siloflow bench` after the services stopped (`python -m services.bench.lookups OUT`, the
deployment's environment); writes one JSON object to OUT. The host ids are streamed from the
registry with a cursor and timings go into a fixed histogram, so the process's growth is the
cache's."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from services.core.settings import Settings
from services.router.directory import RouterDirectory

CONCURRENCY = 16
BATCH = 10_000


class Histogram:
    """Durations in buckets 2% wide from 0.1 µs: percentiles within 2%, in constant memory."""

    _BASE_S = 1e-7
    _STEP = math.log(1.02)

    def __init__(self) -> None:
        self._counts = [0] * 1400  # up to ~ 0.1 µs * 1.02^1400, far past any lookup
        self.total = 0

    def add(self, seconds: float) -> None:
        """Count one duration."""
        index = int(math.log(max(seconds, self._BASE_S) / self._BASE_S) / self._STEP)
        self._counts[min(index, len(self._counts) - 1)] += 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile `q`, in seconds (0 when empty)."""
        wanted, seen = q * self.total, 0
        for index, count in enumerate(self._counts):
            seen += count
            if count and seen >= wanted:
                return float(self._BASE_S * math.exp((index + 1) * self._STEP))
        return 0.0


def rss_mib() -> float:
    """This process's resident set now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def host_ids(dsn: str) -> AsyncIterator[list[uuid.UUID]]:
    """Every bound host of the registry, in batches (a cursor: never all of them at once)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            cursor = await conn.cursor("select host_id from registry_host_tenant")
            while rows := await cursor.fetch(BATCH):
                yield [row[0] for row in rows]
    finally:
        await conn.close()


async def probe(settings: Settings) -> dict[str, Any]:
    """Look every bound host up cold, then warm; the figures as `siloflow bench` reports them."""
    directory = RouterDirectory(settings)
    await directory.start()
    try:
        if not await directory.wait_listening(30):
            raise RuntimeError("the router's directory heard no registry notices in 30 s")
        cold, warm = Histogram(), Histogram()
        base: float | None = None
        started = time.perf_counter()

        async def timed(host: uuid.UUID, into: Histogram) -> None:
            begun = time.perf_counter()
            await directory.lookup(host)
            into.add(time.perf_counter() - begun)

        async for batch in host_ids(settings.registry_url):
            start = 0
            if base is None:  # the first lookup opens the registry pool: growth counts after it
                await timed(batch[0], cold)
                base, start = rss_mib(), 1
            for i in range(start, len(batch), CONCURRENCY):
                await asyncio.gather(*(timed(h, cold) for h in batch[i : i + CONCURRENCY]))
        cold_s = time.perf_counter() - started
        grown = rss_mib() - (base or rss_mib())
        cached = directory.size
        misses = directory.misses
        async for batch in host_ids(settings.registry_url):
            for host in batch:
                await timed(host, warm)
        return {
            "router_directory_hosts_looked_up": cold.total,
            "router_directory_hosts_cached": cached,
            "router_rss_growth_mib": round(grown, 1),
            "router_rss_bytes_per_host": round(grown * 2**20 / cached) if cached else None,
            "router_cold_lookups_per_s": round(cold.total / cold_s) if cold_s else None,
            "router_cold_p99_ms": round(cold.percentile(0.99) * 1000, 3),
            "router_warm_p50_ms": round(warm.percentile(0.50) * 1000, 4),
            "router_warm_p99_ms": round(warm.percentile(0.99) * 1000, 4),
            "router_warm_misses": directory.misses - misses,
        }
    finally:
        await directory.close()


def main() -> None:
    """Entry point: the figures as JSON, into the file named by the one argument."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m services.bench.lookups OUT.json")
    Path(sys.argv[1]).write_text(json.dumps(asyncio.run(probe(Settings()))))


if __name__ == "__main__":
    main()
