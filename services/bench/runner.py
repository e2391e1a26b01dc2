"""`siloflow bench`: siloflow against a hand-written baseline, on one workload.

Both systems run as separate processes, one after the other, `runs` times interleaved (siloflow,
baseline, siloflow, baseline, ...), on a namespace (databases, roles, vhost) of the bench's own,
on a PostgreSQL server that runs nothing else (the bench starts one, commit timestamps on), all
removed at the end. Each run of each system: a warm-up (every host reports once, untimed), a
throughput phase (the planned reports published as fast as the broker confirms), then a latency
phase at a fixed rate (half of siloflow's maximum in that run, the same rate for both). Each
report's latency runs from its sent_at to the end of the commit that made it durable
(PostgreSQL's commit timestamp), for both systems alike. CPU time of every process (services,
the RabbitMQ node, the PostgreSQL server) is read from /proc, less what the bench's own database
sessions spent (their backends' pids are known); peak RSS of each service likewise."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import structlog

from services.bench import baseline, procstat, publisher, servers
from services.bench.deployment import Deployment, Options, check_broker
from services.bench.probes import (
    Probe,
    router_figures,
    scrape_router,
)
from services.bench.processes import Running, cpu_groups, free_port, peak_rss
from services.bench.results import Phase, SystemResult, summarise
from services.core.broker.users import agent_url
from services.core.settings import Settings

log = structlog.get_logger(__name__)

# The report path's services (ingest only enrolls: it runs, idle, as it would in production).
SERVICES = ("ingest", "router", "workers")
BASELINE_SERVICES = ("forward", "write")
WARM_UP = "system_info"  # each host's untimed first report, as an agent starts

__all__ = ["Bench", "Options", "run"]


class Publish(Protocol):
    """Publishes a phase: `count` reports of the seeded plan at `rate` (0: as fast as they are
    taken), or with `warm_up` one report of that kind from each host."""

    def __call__(
        self, count: int, rate: float, seed: int, warm_up: str | None = None
    ) -> Awaitable[dict[str, Any]]: ...


@dataclasses.dataclass
class Live:
    """siloflow's services of one phase, running: a publisher of signed reports and the probe
    of the tenants' ledgers."""

    running: Running
    publish: Publish
    probe: Probe


class Bench(Deployment):
    """The two systems' runs, each a throughput phase and a latency phase."""

    async def publish(
        self,
        exchange: str,
        count: int,
        rate: float,
        seed: int,
        sign: bool,
        warm_up: str | None = None,
    ) -> dict[str, Any]:
        # Siloflow's reports are published as agents publish them, with the agent user; the
        # baseline's with the URL its own topology was declared with.
        """Publish a phase: as agents publish (signed, the agent user), or for the baseline."""
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
        probe: Probe,
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
        each_host = functools.partial(publish, warm_up=WARM_UP)
        phase = await self.measure(system, running, each_host, probe, self.options.hosts, 0, 0)
        if phase.missing or phase.unexpected:
            raise RuntimeError(
                f"{system}'s warm-up lost {phase.missing} and added {phase.unexpected} reports"
            )

    async def measure(
        self,
        system: str,
        running: Running,
        publish: Callable[[int, float, int], Awaitable[dict[str, Any]]],
        probe: Probe,
        count: int,
        rate: float,
        seed: int,
    ) -> Phase:
        """One phase: publish, wait until every report is committed (asking only counts), read
        the CPU spent, then the rows and their commit times."""
        before = procstat.snapshot()
        since = datetime.now(UTC)
        wall = time.monotonic()
        published = await publish(count, rate, seed)
        wanted = len(published["ids"])
        deadline = time.monotonic() + max(120.0, count / 200)
        peak_connections = 0
        while True:
            running.check()
            peak_connections = max(peak_connections, await probe.tenant_sessions(self.login_prefix))
            if not probe.long_lived and await self.queued() > 0:
                # Reading a thousand databases is work of its own: ask the broker until its
                # queues are empty, then count in the databases (after the CPU was read).
                await asyncio.sleep(1.0)
                continue
            if not probe.long_lived:
                after = procstat.snapshot()
            if await probe.count(since) >= wanted or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25 if probe.long_lived else 1.0)
        if probe.long_lived:
            after = procstat.snapshot()
        seen = await probe.commits(since)
        ids = seen.ids
        # From the first report sent to the end of the last commit, by the clocks that stamped
        # them.
        elapsed = (
            seen.last_commit - published["started"] if seen.last_commit else time.monotonic() - wall
        )
        groups = cpu_groups(before, running, self.amqp_port, self.pg_port)
        cpu = {
            name: procstat.group_cpu_s(after, roots) - procstat.group_cpu_s(before, roots)
            for name, roots in groups.items()
        }
        # The bench's own sessions are the server's children too: their share is not the
        # pipeline's.
        probing = procstat.own_cpu_s(after, probe.pids) - procstat.own_cpu_s(before, probe.pids)
        cpu["postgresql"] = max(cpu["postgresql"] - probing, 0.0)
        return Phase(
            system=system,
            published=wanted,
            committed=len(ids & published["ids"]),
            missing=len(published["ids"] - ids),
            unexpected=len(ids - published["ids"]),
            seconds=elapsed,
            first_sent=published["started"],
            latencies_s=seen.latencies,
            kinds=seen.kinds,
            peak_tenant_connections=peak_connections,
            cpu_s=cpu,
            rate=rate,
            probe_cpu_s=probing,
        )

    async def idle_cost(self, running: Running, probe: Probe) -> dict[str, Any]:
        """What the deployment costs doing nothing, every tenant warm (its consumer attached,
        its connection open): cores each process group spends over `idle_s` with nothing
        published, and the memory each holds (PSS: the servers' processes add up to the
        server), the bench's own database sessions left out; and the broker node's own count."""
        before = procstat.snapshot()
        await asyncio.sleep(self.options.idle_s)  # the window measured: nothing is published
        after = procstat.snapshot()
        groups = cpu_groups(after, running, self.amqp_port, self.pg_port)
        cores = {
            name: (procstat.group_cpu_s(after, roots) - procstat.group_cpu_s(before, roots))
            / self.options.idle_s
            for name, roots in groups.items()
        }
        probing = procstat.own_cpu_s(after, probe.pids) - procstat.own_cpu_s(before, probe.pids)
        cores["postgresql"] = max(cores["postgresql"] - probing / self.options.idle_s, 0.0)
        memory = {
            name: sum(
                procstat.pss_mib(pid) for pid in procstat.descendants(after, roots) - probe.pids
            )
            for name, roots in groups.items()
        }
        nodes = (await self.management("GET", "/nodes")).json()
        used = [n["mem_used"] for n in nodes if n.get("running") and n.get("mem_used")]
        return {
            "window_s": self.options.idle_s,
            "cores": cores,
            "pss_mib": memory,
            "broker_mem_used_mib": sum(used) / 2**20 if used else None,
        }

    @property
    def amqp_port(self) -> int:
        """The broker's AMQP port (its node is found by it)."""
        return urlsplit(self.settings.amqp_url).port or 5672

    @property
    def pg_port(self) -> int:
        """The PostgreSQL server's port (its postmaster is found by it)."""
        return urlsplit(self.pg).port or 5432

    @property
    def login_prefix(self) -> str:
        """The prefix of the deployment's tenant logins (their sessions are counted)."""
        return self.names.login_prefix

    def probe(self, databases: list[str], table: str) -> Probe:
        """A probe of these databases and table."""
        return Probe(self.pg, databases, table, self.admin_dsn)

    @asynccontextmanager
    async def live(
        self, names: tuple[str, ...], envs: dict[str, dict[str, str]]
    ) -> AsyncIterator[Live]:
        """siloflow's named services started (`envs`: each one's settings) and consuming every
        queue of the bench's tenants, until the block ends."""
        running = self.start({name: ["run", name] for name in names}, envs=envs)
        try:
            queues = [self.names.intake_queue] + [
                self.names.tenant_queue(f"t{i:04d}") for i in range(self.options.tenants)
            ]
            await self.wait_consumers(queues, timeout_s=120 + self.options.tenants * 0.2)

            async def publish(
                count: int, rate: float, seed: int, warm_up: str | None = None
            ) -> dict[str, Any]:
                exchange = self.names.agents_exchange
                return await self.publish(exchange, count, rate, seed, True, warm_up)

            async with self.probe(self.tenant_dbs, "agent_messages") as probe:
                yield Live(running, publish, probe)
        finally:
            running.stop()

    async def run_siloflow(
        self,
        progress: Callable[[str], None],
        rate: float | None = None,
        *,
        system: str = "siloflow",
        env: dict[str, str] | None = None,
    ) -> SystemResult:
        """One run of siloflow: warm-up, throughput, then latency at `rate` (None: half of
        this run's maximum). `env`: settings of every service for this run; `system` names it."""
        self.router_port = free_port()
        envs = {name: dict(env or {}) for name in SERVICES}
        envs["router"]["SILOFLOW_METRICS_PORT"] = str(self.router_port)
        idle: dict[str, Any] = {}
        async with self.live(SERVICES, envs) as live:
            running, publish, probe = live.running, live.publish, live.probe
            await self.warm_up(system, running, publish, probe, progress)
            if self.options.idle_s:
                progress(f"{system}: idle for {self.options.idle_s:.0f} s, every tenant warm")
                idle = await self.idle_cost(running, probe)
            progress(f"{system}: {self.options.reports:,} reports as fast as they are taken")
            peak = await self.measure(system, running, publish, probe, self.options.reports, 0, 1)
            self.latency_rate = rate or max(peak.throughput / 2, 1.0)
            count = int(self.latency_rate * self.options.latency_s)
            progress(f"{system}: {count:,} reports at {self.latency_rate:,.0f}/s for latency")
            before_steady = await scrape_router(self.router_port)
            steady = await self.measure(
                system, running, publish, probe, count, self.latency_rate, 2
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
        lookups["provision_s_per_tenant"] = self.provision_s_per_tenant
        if idle:
            lookups["idle"] = idle
        # With the services stopped and the cores idle: the lookup itself, not the scheduler.
        lookups.update(await self.directory_probe(progress))
        return SystemResult(
            system, peak, steady, rss, dead_letters=await self.dead_letters(), extra=lookups
        )

    async def directory_probe(self, progress: Callable[[str], None]) -> dict[str, Any]:
        """Every bound host of the registry looked up through the router's directory, in a
        process of its own (`services.bench.lookups`): its growth is the cache's."""
        progress(
            f"router directory: {self.options.hosts + self.options.bindings:,} hosts "
            "looked up cold, then warm"
        )
        out = self.options.workdir / "lookups.json"
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.bench.lookups",
            str(out),
            env=self.env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the directory probe failed: {err.decode()[-2000:]}")
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures

    async def set_up_baseline(self) -> None:
        """The baseline's databases (a table each) and its broker topology, once for every
        run."""
        conn = await asyncpg.connect(self.admin_dsn)
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

    async def run_baseline(self, progress: Callable[[str], None]) -> SystemResult:
        """One run of the baseline, at siloflow's latency rate of the same pair (of the pair
        before, when the baseline goes first)."""
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
                count: int, rate: float, seed: int, warm_up: str | None = None
            ) -> dict[str, Any]:
                return await self.publish(exchange, count, rate, seed, False, warm_up)

            async with self.probe(self.baseline_dbs, "reports") as probe:
                await self.warm_up("baseline", running, publish, probe, progress)
                progress(f"baseline: {self.options.reports:,} reports as fast as they are taken")
                peak = await self.measure(
                    "baseline", running, publish, probe, self.options.reports, 0, 1
                )
                count = int(self.latency_rate * self.options.latency_s)
                progress(f"baseline: {count:,} reports at {self.latency_rate:,.0f}/s for latency")
                steady = await self.measure(
                    "baseline", running, publish, probe, count, self.latency_rate, 2
                )
            rss = peak_rss(running)
        finally:
            running.stop()
        return SystemResult("baseline", peak, steady, rss, dead_letters=0)


def first_in(index: int) -> str:
    """Which system runs first in pair `index`: siloflow, then the baseline, in turn, so
    neither always meets the machine warm (or tired) from the other. The first pair starts with
    siloflow: the baseline's latency phase runs at siloflow's half load, known from then on."""
    return "siloflow" if index % 2 == 0 else "baseline"


async def run(base: Settings, options: Options, progress: Callable[[str], None]) -> dict[str, Any]:
    """The whole benchmark; returns the figures (see `results.summarise`)."""
    await check_broker(base, options.tenants)  # before anything exists to remove
    async with servers.postgres(options, progress) as admin_dsn:
        options = dataclasses.replace(options, admin_dsn=admin_dsn)
        bench = Bench(base, options)
        progress(f"namespace {bench.namespace}; logs in {options.workdir}")
        runs: list[tuple[SystemResult, SystemResult | None]] = []
        try:
            await bench.set_up(progress)
            if options.baseline:
                await bench.set_up_baseline()
            for index in range(options.runs):
                first = first_in(index) if options.baseline else "siloflow"
                progress(f"run {index + 1} of {options.runs}, {first} first")
                if first == "baseline":
                    # At the latency rate of siloflow's run before: the pair's own is not known yet.
                    base_result: SystemResult | None = await bench.run_baseline(progress)
                    silo = await bench.run_siloflow(progress)
                else:
                    silo = await bench.run_siloflow(progress)
                    base_result = await bench.run_baseline(progress) if options.baseline else None
                silo.extra["ran_first"] = first == "siloflow"
                if base_result is not None:
                    base_result.extra["ran_first"] = first == "baseline"
                runs.append((silo, base_result))
        finally:
            progress("removing the bench's databases, roles and vhost")
            await bench.tear_down()
    return summarise(bench.namespace, options, runs)
