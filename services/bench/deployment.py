"""The bench's deployment: a namespace of its own (databases, roles, a RabbitMQ vhost) set up,
its tenants provisioned and hosts enrolled, the processes it runs started, and all of it removed
at the end. The runs of the two systems on it are in `runner.py`."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.agent.client import Identity
from services.agent.enroll import register_hosts
from services.bench.matching import CATALOG
from services.bench.processes import Running, start
from services.catalog import store as catalog_store
from services.core.errors import InvalidArgument
from services.core.names import Names
from services.core.outcomes import DeadLetterQueue
from services.core.settings import Settings, load_settings
from services.ops import migrate, tokens
from services.ops.bootstrap import bootstrap, teardown
from services.ops.tenants import create_tenant

# Broker file descriptors a tenant's quorum queue needs (measured: ~3), and what else needs some.
FDS_PER_QUEUE = 3
FDS_SPARE = 300


@dataclass
class Options:
    """What a bench run is asked to do (the command's options)."""

    tenants: int = 10
    hosts: int = 200
    reports: int = 20_000
    latency_s: float = 20.0  # how long the fixed-rate phase publishes
    bindings: int = 0  # extra host bindings seeded into the registry (router scale)
    seed: int = 7
    baseline: bool = True
    warm_up: bool = True  # each host reports once, untimed, before the timed phases
    # A superuser DSN of the PostgreSQL server to run on; None: a server of the bench's own,
    # started for the run and removed after (`servers.postgres`).
    admin_dsn: str | None = None
    runs: int = 3  # siloflow/baseline pairs, interleaved; the ratios are their medians
    worker_processes: int = 0  # siloflow's default: one per CPU
    max_tenant_engines: int | None = None  # siloflow's default (SILOFLOW_MAX_TENANT_ENGINES)
    idle_s: float = 0.0  # after the warm-up, a window with nothing published: the idle cost
    window: int = 500  # publisher confirms in flight
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="siloflow-bench-")))


async def check_broker(base: Settings, tenants: int) -> None:
    """Refuse, before creating anything, a tenant count the broker's file descriptors cannot
    hold: each quorum queue keeps files open, and a node short of descriptors stops answering
    AMQP handshakes (a node with 927 wedged at about 310 tenant queues)."""
    async with httpx.AsyncClient(base_url=f"{base.management_api}/api", timeout=30) as api:
        response = await api.get("/nodes")
        response.raise_for_status()  # a refused login is said by its setting (diagnosis)
        nodes = response.json()
    limits = [int(n["fd_total"]) for n in nodes if n.get("running") and n.get("fd_total")]
    needed = FDS_PER_QUEUE * tenants + FDS_SPARE
    if limits and min(limits) < needed:
        raise InvalidArgument(
            f"{tenants} tenants need about {needed:,} file descriptors on the broker, which "
            f"allows {min(limits):,}: raise its limit (ulimit -n), or run a node that has one "
            "(deploy/local/rabbit-cluster.sh start 1, then use the settings "
            "`deploy/local/rabbit-cluster.sh env` prints)"
        )


class Deployment:
    """What the bench runs on, and how it starts, watches and removes it."""

    def __init__(self, base: Settings, options: Options) -> None:
        assert options.admin_dsn is not None, "the server is chosen before the deployment"
        self.options = options
        self.admin_dsn: str = options.admin_dsn
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
            registry_dsn=f"{self.admin_dsn.rsplit('/', 1)[0]}/{self.namespace}_registry",
            credentials=base.credentials,
            log_level="warning",
            max_tenant_engines=options.max_tenant_engines or base.max_tenant_engines,
        )
        self.pg = self.admin_dsn.rsplit("/", 1)[0]
        self.identities: list[Identity] = []
        self.tenant_dbs: list[str] = []
        self.baseline_dbs: list[str] = []
        self.latency_rate = 1.0
        self.router_port = 0
        self.provision_s_per_tenant = 0.0  # `tenant create`, one after another, each

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a process of the bench's deployment starts with."""
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
            "SILOFLOW_MAX_TENANT_ENGINES": str(s.max_tenant_engines),
        }
        if self.options.worker_processes:
            env["SILOFLOW_WORKER_PROCESSES"] = str(self.options.worker_processes)
        env.update(extra)
        return env

    async def management(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to RabbitMQ's management API, as the broker administrator."""
        async with httpx.AsyncClient(base_url=f"{self.base.management_api}/api", timeout=30) as api:
            return await api.request(method, path, **kwargs)

    async def set_up(self, progress: Callable[[str], None]) -> None:
        """The vhost, bootstrap, migrations, the tenants, seeded bindings and the enrolled hosts."""
        (await self.management("PUT", f"/vhosts/{self.namespace}")).raise_for_status()
        user = httpx.URL(self.base.management_api).username or "guest"
        await self.management(
            "PUT",
            f"/permissions/{self.namespace}/{user}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        await bootstrap(self.settings, self.admin_dsn)
        await migrate.migrate(self.settings)
        progress(f"provisioning {self.options.tenants} tenants")
        slugs = [f"t{i:04d}" for i in range(self.options.tenants)]
        # One at a time, as operators run `tenant create`: four concurrent creations in one
        # process once stalled after 307 tenants (see docs/performance.md).
        started = time.monotonic()
        for slug in slugs:
            self.tenant_dbs.append((await create_tenant(self.settings, slug)).tenant.db_name)
        self.provision_s_per_tenant = (time.monotonic() - started) / len(slugs)
        if self.options.bindings:
            progress(f"seeding {self.options.bindings:,} host bindings")
            await self.seed_bindings(self.options.bindings)
        progress(f"enrolling {self.options.hosts} hosts through the reference client")
        await self.enroll(slugs)
        # As deployed: the shipped bookworm catalog in force, so the workers match every
        # packages snapshot (SILOFLOW_CATALOG_MATCHING=false turns it off for a side).
        with CATALOG.open("rb") as stream:
            await catalog_store.import_feed(
                self.settings, stream, source="bench", releases={"bookworm"}
            )

    async def seed_bindings(self, count: int) -> None:
        """Bulk bindings of hosts that never report (a large registry for the router)."""
        conn = await asyncpg.connect(f"{self.pg}/{self.settings.registry_database}")
        try:
            tenant_ids = [r["id"] for r in await conn.fetch("select id from registry_tenants")]
            records = ((uuid.uuid4(), tenant_ids[i % len(tenant_ids)]) for i in range(count))
            await conn.copy_records_to_table(
                "registry_host_tenant", records=records, columns=["host_id", "tenant_id"]
            )
            # As after any bulk load: otherwise autovacuum takes the million fresh rows on while
            # the phases are measured, on the same two cores.
            await conn.execute("vacuum analyze registry_host_tenant")
        finally:
            await conn.close()

    async def enroll(self, slugs: list[str]) -> None:
        """Issue a token per tenant and enroll the hosts through the reference client."""
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
        """Remove all the bench created: the deployment, the baseline's databases, the vhost."""
        try:
            await teardown(self.settings, self.admin_dsn)
        finally:
            conn = await asyncpg.connect(self.admin_dsn)
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
        """Start the named processes of one system, as a deployment would."""
        return start(
            commands,
            module=module,
            env_for=lambda name: self.env(**(envs or {}).get(name, {})),
            workdir=self.options.workdir,
        )

    async def wait_consumers(self, queues: list[str], timeout_s: float = 60) -> None:
        """Return once every queue has a consumer (or fail, naming the queues that have none)."""
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

    async def queued(self) -> int:
        """Messages in this namespace's work queues (the management API's view, a few seconds
        late), dead-letter queues left out."""
        listed = (await self.management("GET", f"/queues/{self.namespace}")).json()
        return sum(int(q.get("messages", 0) or 0) for q in listed if ".dlq." not in q["name"])

    async def dead_letters(self) -> int:
        """Messages in the deployment's dead-letter queues."""
        total = 0
        for which in DeadLetterQueue:
            response = await self.management(
                "GET", f"/queues/{self.namespace}/{self.names.dlq(which)}"
            )
            total += int(response.json().get("messages", 0) or 0)
        return total

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
