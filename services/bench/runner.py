"""`siloflow bench`: siloflow against a hand-written baseline, on one workload, in one run.

Both systems run as separate processes, one after the other, on a namespace (databases, roles,
vhost) of the bench's own that is removed at the end. For each: a throughput phase (the planned
reports published as fast as the broker confirms), then a latency phase at a fixed rate (half of
siloflow's measured maximum, the same rate for both). CPU time of every process (services, the
RabbitMQ node, the PostgreSQL server) and peak RSS of each service are read from /proc."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import structlog

from services.bench import baseline, procstat, publisher
from services.bench.deployment import Deployment, Options
from services.bench.probes import (
    Commits,
    lookup_probe,
    read_commits,
    router_figures,
    scrape_router,
)
from services.bench.processes import Running, cpu_groups, free_port, peak_rss
from services.bench.results import Phase, SystemResult
from services.core.broker_users import agent_url
from services.core.settings import Settings

log = structlog.get_logger(__name__)

SERVICES = ("ingest", "router", "workers")
BASELINE_SERVICES = ("forward", "write")

__all__ = ["Bench", "Options", "run"]


class Publish(Protocol):
    """Publishes a phase: `count` reports of the seeded plan at `rate` (0: as fast as they are
    taken), or with `warm_up` one heartbeat from each host."""

    def __call__(
        self, count: int, rate: float, seed: int, warm_up: bool = False
    ) -> Awaitable[dict[str, Any]]: ...


class Bench(Deployment):
    """The two systems' runs, each a throughput phase and a latency phase."""

    async def publish(
        self, exchange: str, count: int, rate: float, seed: int, sign: bool, warm_up: bool = False
    ) -> dict[str, Any]:
        # Siloflow's reports are published as agents publish them, with the agent user; the
        # baseline's with the URL its own topology was declared with.
        url = agent_url(self.settings) if sign else self.settings.amqp_url
        return await publisher.in_process(
            url,
            exchange,
            self.identities,
            count=count,
            rate=rate,
            seed=seed,
            sign=sign,
            window=self.options.window,
            workdir=self.options.workdir,
            warm_up=warm_up,
        )

    async def warm_up(
        self,
        system: str,
        running: Running,
        publish: Publish,
        committed: Callable[[datetime], Awaitable[Commits]],
        progress: Callable[[str], None],
    ) -> None:
        """Every host reports once, untimed, before the phases: a system's first report to
        each tenant opens what it keeps open (a login, a database connection, its plans), once
        per process or credential lifetime. Measured, with a thousand tenants and 20 reports
        each, that start-up would be a good share of what is timed, and it is not throughput.
        Checked like a phase: a warm-up that loses a report voids the run."""
        if not self.options.warm_up:
            return
        progress(f"{system}: warming up, one report from each of {self.options.hosts:,} hosts")
        each_host = functools.partial(publish, warm_up=True)
        phase = await self.measure(system, running, each_host, committed, self.options.hosts, 0, 0)
        if phase.missing or phase.unexpected:
            raise RuntimeError(
                f"{system}'s warm-up lost {phase.missing} and added {phase.unexpected} reports"
            )

    async def measure(
        self,
        system: str,
        running: Running,
        publish: Callable[[int, float, int], Awaitable[dict[str, Any]]],
        committed: Callable[[datetime], Awaitable[Commits]],
        count: int,
        rate: float,
        seed: int,
    ) -> Phase:
        """One phase: publish, wait until every report is committed, read the figures."""
        before = procstat.snapshot()
        since = datetime.now(UTC)
        wall = time.monotonic()
        published = await publish(count, rate, seed)
        deadline = time.monotonic() + max(120.0, count / 200)
        peak_connections = 0
        while True:
            running.check()
            peak_connections = max(peak_connections, await self.tenant_connections())
            if self.options.tenants > 100 and await self.queued() > 0:
                # Reading a thousand databases is work the pipeline would pay for: ask the
                # broker until its queues are empty, then count in the databases.
                await asyncio.sleep(1.0)
                continue
            seen = await committed(since)
            if len(seen.ids) >= len(published["ids"]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0 if self.options.tenants > 100 else 0.25)
        after = procstat.snapshot()
        ids = seen.ids
        # From the first report sent to the last commit, by the clocks that stamped them.
        elapsed = (
            seen.last_commit - published["started"] if seen.last_commit else time.monotonic() - wall
        )
        groups = cpu_groups(before, running, urlsplit(self.settings.amqp_url).port or 5672)
        cpu = {
            name: procstat.group_cpu_s(after, roots) - procstat.group_cpu_s(before, roots)
            for name, roots in groups.items()
        }
        return Phase(
            system=system,
            published=len(published["ids"]),
            committed=len(ids & published["ids"]),
            missing=len(published["ids"] - ids),
            unexpected=len(ids - published["ids"]),
            seconds=elapsed,
            first_sent=published["started"],
            latencies_s=seen.latencies,
            peak_tenant_connections=peak_connections,
            cpu_s=cpu,
            rate=rate,
        )

    async def silo_commits(self, since: datetime) -> Commits:
        return await self._commits(self.tenant_dbs, "agent_messages", since)

    async def baseline_commits(self, since: datetime) -> Commits:
        return await self._commits(self.baseline_dbs, "reports", since)

    async def _commits(self, databases: list[str], table: str, since: datetime) -> Commits:
        return await read_commits(self.pg, databases, table, since)

    async def run_siloflow(self, progress: Callable[[str], None]) -> SystemResult:
        self.router_port = free_port()
        running = self.start(
            {name: ["run", name] for name in SERVICES},
            envs={"router": {"SILOFLOW_METRICS_PORT": str(self.router_port)}},
        )
        try:
            queues = [self.names.intake_queue] + [
                self.names.tenant_queue(f"t{i:04d}") for i in range(self.options.tenants)
            ]
            await self.wait_consumers(queues, timeout_s=120 + self.options.tenants * 0.2)

            async def publish(
                count: int, rate: float, seed: int, warm_up: bool = False
            ) -> dict[str, Any]:
                exchange = self.names.agents_exchange
                return await self.publish(exchange, count, rate, seed, True, warm_up)

            await self.warm_up("siloflow", running, publish, self.silo_commits, progress)
            progress(f"siloflow: {self.options.reports:,} reports as fast as they are taken")
            peak = await self.measure(
                "siloflow", running, publish, self.silo_commits, self.options.reports, 0, 1
            )
            self.latency_rate = max(peak.throughput / 2, 1.0)
            count = int(self.latency_rate * self.options.latency_s)
            progress(f"siloflow: {count:,} reports at {self.latency_rate:,.0f}/s for latency")
            before_steady = await scrape_router(self.router_port)
            steady = await self.measure(
                "siloflow", running, publish, self.silo_commits, count, self.latency_rate, 2
            )
            rss = peak_rss(running)
            lookups = router_figures(await scrape_router(self.router_port), before_steady)
            lookups["registry_bindings"] = self.options.hosts + self.options.bindings
            # What the settings allow: each worker process and ingest keep at most
            # max_tenant_engines pools of tenant_pool_size connections, whatever the tenants.
            processes = self.options.worker_processes or os.cpu_count() or 1
            s = self.settings
            lookups["tenant_connection_bound"] = (
                (processes + 1) * s.max_tenant_engines * s.tenant_pool_size
            )
        finally:
            running.stop()
        # With the services stopped and the cores idle: the lookup itself, not the scheduler.
        lookups.update(await lookup_probe(self.settings, await self.probe_hosts()))
        return SystemResult(
            "siloflow", peak, steady, rss, dead_letters=await self.dead_letters(), extra=lookups
        )

    async def run_baseline(self, progress: Callable[[str], None]) -> SystemResult:
        conn = await asyncpg.connect(self.options.admin_dsn)
        try:
            for index in range(self.options.tenants):
                database = f"{self.namespace}_base_{index}"
                await conn.execute(f'create database "{database}"')
                self.baseline_dbs.append(database)
        finally:
            await conn.close()
        for database in self.baseline_dbs:
            db = await asyncpg.connect(f"{self.pg}/{database}")
            try:
                await db.execute(baseline.SCHEMA)
            finally:
                await db.close()
        await baseline.declare(self.settings.amqp_url, self.namespace, self.options.tenants)
        slug_index = {f"t{i:04d}": i for i in range(self.options.tenants)}
        routes = await self.host_routes(slug_index)
        job = {
            "namespace": self.namespace,
            "amqp_url": self.settings.amqp_url,
            "routes": routes,
            "databases": [f"{self.pg}/{d}" for d in self.baseline_dbs],
        }
        job_path = self.options.workdir / "baseline.json"
        job_path.write_text(json.dumps(job))
        running = self.start(
            {role: [role, str(job_path)] for role in BASELINE_SERVICES},
            module="services.bench.baseline",
        )
        try:
            await self.wait_consumers(
                [baseline.intake_queue(self.namespace)]
                + [baseline.tenant_queue(self.namespace, i) for i in range(self.options.tenants)]
            )
            exchange = baseline.exchange_name(self.namespace)

            async def publish(
                count: int, rate: float, seed: int, warm_up: bool = False
            ) -> dict[str, Any]:
                return await self.publish(exchange, count, rate, seed, False, warm_up)

            await self.warm_up("baseline", running, publish, self.baseline_commits, progress)
            progress(f"baseline: {self.options.reports:,} reports as fast as they are taken")
            peak = await self.measure(
                "baseline", running, publish, self.baseline_commits, self.options.reports, 0, 1
            )
            count = int(self.latency_rate * self.options.latency_s)
            progress(f"baseline: {count:,} reports at {self.latency_rate:,.0f}/s for latency")
            steady = await self.measure(
                "baseline", running, publish, self.baseline_commits, count, self.latency_rate, 2
            )
            rss = peak_rss(running)
        finally:
            running.stop()
        return SystemResult("baseline", peak, steady, rss, dead_letters=0)


async def run(base: Settings, options: Options, progress: Callable[[str], None]) -> dict[str, Any]:
    """The whole benchmark; returns the figures (see `results.summarise`)."""
    from services.bench.results import summarise  # noqa: PLC0415

    bench = Bench(base, options)
    progress(f"namespace {bench.namespace}; logs in {options.workdir}")
    await bench.check_broker()  # before anything exists to remove
    try:
        await bench.set_up(progress)
        silo = await bench.run_siloflow(progress)
        base_result = await bench.run_baseline(progress) if options.baseline else None
    finally:
        progress("removing the bench's databases, roles and vhost")
        await bench.tear_down()
    return summarise(bench.namespace, options, silo, base_result)
