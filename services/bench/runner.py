"""`siloflow bench`: siloflow against a hand-written baseline, on one workload, in one run.

Both systems run as separate processes, one after the other, on a namespace (databases, roles,
vhost) of the bench's own that is removed at the end. For each: a throughput phase (the planned
reports published as fast as the broker confirms), then a latency phase at a fixed rate (half of
siloflow's measured maximum, the same rate for both). CPU time of every process (services, the
RabbitMQ node, the PostgreSQL server) and peak RSS of each service are read from /proc."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import structlog

from services.agent.client import Identity
from services.agent.enroll import register_hosts
from services.bench import baseline, procstat, publisher
from services.bench.probes import (
    Commits,
    lookup_probe,
    read_commits,
    router_figures,
    scrape_router,
    tenant_sessions,
)
from services.bench.processes import Running, cpu_groups, free_port, peak_rss, start
from services.bench.results import Phase, SystemResult
from services.core import migrate, tokens
from services.core.bootstrap import bootstrap, teardown
from services.core.errors import InvalidArgument
from services.core.names import Names
from services.core.settings import Settings, load_settings
from services.core.tenants import create_tenant

log = structlog.get_logger(__name__)

SERVICES = ("ingest", "router", "workers")
# Broker file descriptors a tenant's quorum queue needs (measured: ~3), and what else needs some.
FDS_PER_QUEUE = 3
FDS_SPARE = 300
BASELINE_SERVICES = ("forward", "write")


@dataclass
class Options:
    tenants: int = 10
    hosts: int = 200
    reports: int = 20_000
    latency_s: float = 20.0  # how long the fixed-rate phase publishes
    bindings: int = 0  # extra host bindings seeded into the registry (router scale)
    seed: int = 7
    baseline: bool = True
    admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    worker_processes: int = 0  # siloflow's default: one per CPU
    window: int = 500  # publisher confirms in flight
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="siloflow-bench-")))


class Bench:
    def __init__(self, base: Settings, options: Options) -> None:
        self.options = options
        self.namespace = f"bench{secrets.token_hex(4)}"
        self.names = Names(self.namespace)
        self.base = base
        amqp = base.amqp_url.rstrip("/").rsplit("/", 1)[0] if base.vhost != "/" else base.amqp_url
        self.settings = load_settings(
            namespace=self.namespace,
            amqp_url=f"{amqp.rstrip('/')}/{self.namespace}",
            management_url=base.management_api,
            host_key_secrets="1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            # The registry (and so every tenant database's default placement) on the server
            # the admin DSN names: `--admin-dsn` picks the PostgreSQL server the bench runs on.
            registry_dsn=f"{options.admin_dsn.rsplit('/', 1)[0]}/{self.namespace}_registry",
            credentials=base.credentials,
            log_level="warning",
        )
        self.pg = options.admin_dsn.rsplit("/", 1)[0]
        self.identities: list[Identity] = []
        self.tenant_dbs: list[str] = []
        self.baseline_dbs: list[str] = []
        self.latency_rate = 1.0
        self.router_port = 0

    # -- set-up and tear-down ---------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        env = {
            **os.environ,
            "SILOFLOW_NAMESPACE": s.namespace,
            "SILOFLOW_AMQP_URL": s.amqp_url,
            "SILOFLOW_REGISTRY_DSN": s.registry_url,
            "SILOFLOW_MANAGEMENT_URL": s.management_api,
            "SILOFLOW_HOST_KEY_SECRETS": s.host_key_secrets.get_secret_value()
            if s.host_key_secrets
            else "",
            "SILOFLOW_LOG_LEVEL": "warning",
            "SILOFLOW_LOG_FORMAT": "json",
            "SILOFLOW_CREDENTIALS": s.credentials,
        }
        if self.options.worker_processes:
            env["SILOFLOW_WORKER_PROCESSES"] = str(self.options.worker_processes)
        env.update(extra)
        return env

    async def management(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=f"{self.base.management_api}/api", timeout=30) as api:
            return await api.request(method, path, **kwargs)

    async def check_broker(self) -> None:
        """Refuse, before creating anything, a tenant count the broker's file descriptors cannot
        hold: each quorum queue keeps files open, and a node short of descriptors stops
        answering AMQP handshakes (a node with 927 wedged at about 310 tenant queues)."""
        nodes = (await self.management("GET", "/nodes")).json()
        limits = [int(n["fd_total"]) for n in nodes if n.get("running") and n.get("fd_total")]
        needed = FDS_PER_QUEUE * self.options.tenants + FDS_SPARE
        if limits and min(limits) < needed:
            raise InvalidArgument(
                f"{self.options.tenants} tenants need about {needed:,} file descriptors on the "
                f"broker, which allows {min(limits):,}: raise its limit (ulimit -n), or run a node "
                "that has one (deploy/local/rabbit-cluster.sh start 1, then use the settings "
                "`deploy/local/rabbit-cluster.sh env` prints)"
            )

    async def set_up(self, progress: Callable[[str], None]) -> None:
        (await self.management("PUT", f"/vhosts/{self.namespace}")).raise_for_status()
        user = httpx.URL(self.base.management_api).username or "guest"
        await self.management(
            "PUT",
            f"/permissions/{self.namespace}/{user}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        await bootstrap(self.settings, self.options.admin_dsn)
        await migrate.migrate(self.settings)
        progress(f"provisioning {self.options.tenants} tenants")
        slugs = [f"t{i:04d}" for i in range(self.options.tenants)]
        # One at a time, as operators run `tenant create`: four concurrent creations in one
        # process once stalled after 307 tenants (see docs/performance.md).
        for slug in slugs:
            self.tenant_dbs.append((await create_tenant(self.settings, slug)).tenant.db_name)
        if self.options.bindings:
            progress(f"seeding {self.options.bindings:,} host bindings")
            await self.seed_bindings(self.options.bindings)
        progress(f"enrolling {self.options.hosts} hosts through the reference client")
        await self.enroll(slugs)

    async def seed_bindings(self, count: int) -> None:
        """Bulk bindings of hosts that never report (a large registry for the router)."""
        conn = await asyncpg.connect(f"{self.pg}/{self.settings.registry_database}")
        try:
            tenant_ids = [r["id"] for r in await conn.fetch("select id from registry_tenants")]
            records = ((uuid.uuid4(), tenant_ids[i % len(tenant_ids)]) for i in range(count))
            await conn.copy_records_to_table(
                "registry_host_tenant", records=records, columns=["host_id", "tenant_id"]
            )
        finally:
            await conn.close()

    async def enroll(self, slugs: list[str]) -> None:
        per_tenant = -(-self.options.hosts // len(slugs))
        issued = [
            await tokens.issue(
                self.settings, slug, ttl=timedelta(hours=1), uses=per_tenant, note="bench"
            )
            for slug in slugs
        ]
        ingest = self.start({"ingest": ["run", "ingest"]})
        try:
            await self.wait_consumers([self.names.register_queue])
            self.identities = await register_hosts(
                self.settings,
                [
                    (issued[i % len(slugs)].token, f"bench-{i:06d}")
                    for i in range(self.options.hosts)
                ],
            )
        finally:
            ingest.stop()

    async def tear_down(self) -> None:
        try:
            await teardown(self.settings, self.options.admin_dsn)
        finally:
            conn = await asyncpg.connect(self.options.admin_dsn)
            try:
                for database in self.baseline_dbs:
                    await conn.execute(f'drop database if exists "{database}" with (force)')
            finally:
                await conn.close()
            await self.management("DELETE", f"/vhosts/{self.namespace}")

    def start(
        self,
        commands: dict[str, list[str]],
        module: str = "services.cli",
        envs: dict[str, dict[str, str]] | None = None,
    ) -> Running:
        return start(
            commands,
            module=module,
            env_for=lambda name: self.env(**(envs or {}).get(name, {})),
            workdir=self.options.workdir,
        )

    async def wait_consumers(self, queues: list[str], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            listed = (await self.management("GET", f"/queues/{self.namespace}")).json()
            consumers = {q["name"]: q.get("consumers", 0) for q in listed}
            if all(consumers.get(q, 0) >= 1 for q in queues):
                return
            if time.monotonic() > deadline:
                missing = [q for q in queues if consumers.get(q, 0) < 1]
                raise RuntimeError(f"no consumer on {missing[:5]} after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    # -- phases --------------------------------------------------------------------------------

    async def publish(
        self, exchange: str, count: int, rate: float, seed: int, sign: bool
    ) -> dict[str, Any]:
        return await publisher.in_process(
            self.settings.amqp_url,
            exchange,
            self.identities,
            count=count,
            rate=rate,
            seed=seed,
            sign=sign,
            window=self.options.window,
            workdir=self.options.workdir,
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

    async def queued(self) -> int:
        """Messages in this namespace's work queues (the management API's view, a few seconds
        late), dead-letter queues left out."""
        listed = (await self.management("GET", f"/queues/{self.namespace}")).json()
        return sum(int(q.get("messages", 0) or 0) for q in listed if ".dlq." not in q["name"])

    async def tenant_connections(self) -> int:
        return await tenant_sessions(self.options.admin_dsn, self.names.login_prefix)

    async def dead_letters(self) -> int:
        total = 0
        for which in ("invalid", "unrouted", "failed"):
            response = await self.management(
                "GET", f"/queues/{self.namespace}/{self.names.dlq(which)}"
            )
            total += int(response.json().get("messages", 0) or 0)
        return total

    # -- the two systems ------------------------------------------------------------------------

    async def run_siloflow(self, progress: Callable[[str], None]) -> SystemResult:
        self.router_port = free_port()
        running = self.start(
            {name: ["run", name] for name in SERVICES},
            envs={"router": {"SILOFLOW_METRICS_PORT": str(self.router_port)}},
        )
        try:
            queues = [self.names.intake_queue, self.names.router_queue] + [
                self.names.tenant_queue(f"t{i:04d}") for i in range(self.options.tenants)
            ]
            await self.wait_consumers(queues, timeout_s=120 + self.options.tenants * 0.2)

            async def publish(count: int, rate: float, seed: int) -> dict[str, Any]:
                return await self.publish(self.names.agents_exchange, count, rate, seed, True)

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

    async def probe_hosts(self, sample: int = 2000) -> list[uuid.UUID]:
        """The enrolled hosts and, with a large registry, as many seeded ones picked at random."""
        hosts = [identity.host_id for identity in self.identities]
        if self.options.bindings:
            conn = await asyncpg.connect(f"{self.pg}/{self.settings.registry_database}")
            try:
                rows = await conn.fetch(
                    "select host_id from registry_host_tenant order by random() limit $1", sample
                )
            finally:
                await conn.close()
            hosts += [r["host_id"] for r in rows]
        return hosts

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

            async def publish(count: int, rate: float, seed: int) -> dict[str, Any]:
                return await self.publish(exchange, count, rate, seed, False)

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

    async def host_routes(self, slug_index: dict[str, int]) -> dict[str, int]:
        """host id -> tenant index, as the baseline's afternoon would load it: one query."""
        conn = await asyncpg.connect(f"{self.pg}/{self.settings.registry_database}")
        try:
            rows = await conn.fetch(
                "select h.host_id::text, t.slug from registry_host_tenant h "
                "join registry_tenants t on t.id = h.tenant_id where h.revoked_at is null"
            )
        finally:
            await conn.close()
        return {r[0]: slug_index[r[1]] for r in rows}


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
