"""A worker process: consumes the queues of the tenants it is pinned to (named with --tenant, or
its rendezvous share with --shard), holding connections only to their databases, and follows
tenants being created, suspended and deleted through the registry's notices."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.broker.publish import DeadLetters
from services.core.broker.topology import missing_queues
from services.core.broker.users import BrokerRole
from services.core.catalog.live import LiveCatalog
from services.core.db import registry_engine
from services.core.diagnosis import Outage
from services.core.domain import TenantStatus
from services.core.errors import DatabaseUnavailable
from services.core.lifespan import broker, first_of, health, stop_on_signals, wait_drained
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.registry import queries as registry
from services.core.registry.notices import NoticeListener
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.workers import store
from services.workers.assignment import Shard, owner
from services.workers.consumer import TenantConsumer

log = structlog.get_logger(__name__)

RECONCILE_INTERVAL_S = 5.0


def wanted(
    records: list[TenantRecord], tenants: set[str] | None, shard: Shard | None
) -> dict[str, TenantRecord]:
    """The active tenants this process should consume."""
    return {
        r.slug: r
        for r in records
        if r.status == TenantStatus.ACTIVE
        and (tenants is None or r.slug in tenants)
        and (shard is None or owner(r.slug, shard.count) == shard.index)
    }


class Pinned:
    """The tenant consumers of one worker process, kept equal to what the registry says."""

    def __init__(
        self,
        settings: Settings,
        connection: AbstractConnection,
        consume_channel: AbstractChannel,
        dead: DeadLetters,
        engine: AsyncEngine,
        databases: TenantDatabases,
        *,
        tenants: set[str] | None,
        shard: Shard | None,
        catalog: LiveCatalog | None = None,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._names = Names(settings.namespace)
        self._connection = connection
        self._channel = consume_channel
        self._dead = dead
        self._engine = engine
        self._databases = databases
        self._tenants = tenants
        self._shard = shard
        self.consumers: dict[str, TenantConsumer] = {}
        self._registry_outage = Outage(
            "workers.registry_unavailable", settings, "SILOFLOW_REGISTRY_DSN"
        )

    async def reconcile(self) -> None:
        """Start consumers for newly wanted tenants, stop those no longer wanted."""
        try:
            async with self._engine.connect() as conn:
                records = await registry.committable_tenants(conn)
        except (DatabaseUnavailable, DBAPIError, OSError) as exc:
            self._registry_outage.failed(exc)
            return  # keep consuming what we have; the next notice or interval tries again
        self._registry_outage.recovered()
        target = wanted(records, self._tenants, self._shard)
        for slug in [s for s in self.consumers if s not in target]:
            await self.consumers.pop(slug).stop()
        for slug, record in target.items():
            if slug in self.consumers:
                self.consumers[slug].tenant = record  # a new placement takes effect at once
                continue
            queue = self._names.tenant_queue(slug)
            if await missing_queues(self._connection, [queue]):
                # Never declared here (workers hold no right to): the tenant's reports cannot
                # be waiting anywhere else, and the router dead-letters what it cannot deliver.
                log.error(
                    "worker.tenant_queue_missing",
                    tenant=slug,
                    queue=queue,
                    hint="run `siloflow topology apply`, which declares every tenant's queue",
                )
                continue
            consumer = TenantConsumer(
                record,
                self._settings,
                self._databases,
                self._channel,
                self._dead,
                catalog=self._catalog,
            )
            await consumer.start()
            self.consumers[slug] = consumer

    async def drained(self) -> None:
        """Return once the pinned tenants' queues are empty and nothing is in hand."""
        consumers = list(self.consumers.values())
        await wait_drained(
            self._channel, [c.queue_name for c in consumers], [c.in_flight for c in consumers]
        )

    async def stop(self) -> None:
        """Stop every tenant consumer."""
        for consumer in self.consumers.values():
            await consumer.stop()
        self.consumers.clear()


async def run(
    settings: Settings,
    *,
    tenants: set[str] | None = None,
    shard: Shard | None = None,
    burst: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a worker process pinned to tenants (or a shard) until stopped or drained."""
    names = Names(settings.namespace)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    label = f"shard {shard.index}/{shard.count}" if shard else ",".join(sorted(tenants or []))
    label = label or "all"
    engine = registry_engine(settings)
    databases = TenantDatabases(
        settings, RegistryDirectory(engine), server_settings=store.SESSION_SETTINGS
    )
    changed = asyncio.Event()

    def on_notice(payload: str) -> None:
        if "tenant_id" in json.loads(payload):
            changed.set()

    notices = NoticeListener(
        settings,
        names.registry_channel,
        on_notice=on_notice,
        on_reset=lambda _why: changed.set(),
        name="workers",
    )
    notices.start()
    catalog = LiveCatalog(settings) if settings.catalog_matching else None
    stack = AsyncExitStack()
    pinned: Pinned | None = None
    try:
        if catalog is not None:
            await catalog.start()  # before consuming: snapshots match the revision in force
        readiness = await stack.enter_async_context(health(settings))
        channels = await stack.enter_async_context(
            broker(settings, f"workers {label}", BrokerRole.WORKERS, stop)
        )
        readiness.ready = True
        pinned = Pinned(
            settings,
            channels.connection,
            channels.consume,
            DeadLetters(channels.publishers, names, Stage.WORKER),
            engine,
            databases,
            tenants=tenants,
            shard=shard,
            catalog=catalog,
        )
        log.info("workers.started", pinned=label, burst=burst)
        while not stop.is_set():
            changed.clear()
            await pinned.reconcile()
            if burst:
                await pinned.drained()
                break
            await first_of(stop, changed, timeout_s=RECONCILE_INTERVAL_S)
    finally:
        if pinned is not None:
            await pinned.stop()
        await stack.aclose()
        if catalog is not None:
            await catalog.close()
        await notices.close()
        await databases.close()
        await engine.dispose()
    log.info("workers.stopped", pinned=label)
