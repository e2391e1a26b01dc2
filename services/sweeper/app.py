"""The sweeper: the deployment's server-wide background work. One active at a time (a PostgreSQL
advisory lock in the registry; the others wait as standbys), each pass fanning out across every
active tenant database with bounded concurrency, one isolated session each; a tenant that fails
is logged loudly and the others go on. A pass marks silent hosts down, prunes old messages, and
brings every host's findings to the catalog revision in force (`catch_up`): a pass starts as soon
as a new revision lands, a suspended tenant is caught up once it is active again, and a pass cut
short anywhere (a SIGKILL) resumes where it was, each host's revision being recorded with its
findings."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from services.core import backoff, metrics
from services.core.catalog.findings import CatchUp, catch_up, summary
from services.core.catalog.live import LiveCatalog, changed_sources
from services.core.db import registry_engine
from services.core.diagnosis import Outage
from services.core.failures import classify
from services.core.lifespan import first_of, health, stop_on_signals
from services.core.outcomes import Failure
from services.core.registry import queries as registry
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.sweeper.store import mark_down, prune

log = structlog.get_logger(__name__)

PRUNE_BATCH = 1_000


def lock_key(namespace: str) -> int:
    """The advisory lock id of this namespace's sweeper (a stable 63-bit number)."""
    digest = hashlib.blake2b(f"siloflow-sweeper:{namespace}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class PassReport:
    """One sweep over every tenant."""

    marked_down: dict[str, int] = field(default_factory=dict)
    pruned: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    caught_up: dict[str, CatchUp] = field(default_factory=dict)  # by tenant, with a catalog
    catalog_revision: int | None = None


async def sweep_once(
    settings: Settings,
    databases: TenantDatabases,
    tenants: list[TenantRecord],
    catalog: LiveCatalog | None = None,
) -> PassReport:
    """One pass over these tenants: mark silent hosts down, prune old messages, bring findings
    to the catalog revision in force."""
    report = PassReport()
    index = catalog.index if catalog is not None else None
    report.catalog_revision = index.revision if index is not None else None
    if index is not None and index.imported_at is not None:
        metrics.CATALOG_AGE.set((datetime.now(UTC) - index.imported_at).total_seconds())
    known: dict[tuple[int, int], set[tuple[str, str]]] = {}

    async def changes(since: int, upto: int) -> set[tuple[str, str]]:
        if (since, upto) not in known:  # the same for every tenant at that revision
            known[(since, upto)] = await changed_sources(settings, since, upto)
        return known[(since, upto)]

    limit = asyncio.Semaphore(settings.sweep_concurrency)
    silence = timedelta(seconds=settings.host_down_after_s)
    age = timedelta(days=settings.retention_days)

    async def one(tenant: TenantRecord) -> None:
        async with limit:
            try:
                engine = await databases.engine(tenant)
                report.marked_down[tenant.slug] = await mark_down(engine, silence)
                report.pruned[tenant.slug] = await prune(engine, age, PRUNE_BATCH)
                if index is not None:
                    async with databases.driver(tenant) as pg:
                        done = await catch_up(pg, index, changes, duty=settings.reevaluation_duty)
                        behind, by_urgency = await summary(pg, index.revision)
                    report.caught_up[tenant.slug] = done
                    _export(tenant.slug, done, behind, by_urgency)
            except Exception as exc:  # one tenant's failure never stops the others
                report.failed[tenant.slug] = str(exc).splitlines()[0] if str(exc) else repr(exc)
                log.error(
                    "sweeper.tenant_failed", tenant=tenant.slug, error=report.failed[tenant.slug]
                )

    await asyncio.gather(*(one(t) for t in tenants))
    log.info(
        "sweeper.pass",
        marked_down=sum(report.marked_down.values()),
        pruned=sum(report.pruned.values()),
        catalog_revision=report.catalog_revision,
        reevaluated=sum(c.evaluated for c in report.caught_up.values()),
        failed=sorted(report.failed),
    )
    return report


# Urgencies each tenant has had open findings of: one that has none left is set to 0, not left
# at its last count.
_URGENCIES_SEEN: dict[str, set[str]] = {}


def _export(tenant: str, done: CatchUp, behind: int, by_urgency: dict[str, int]) -> None:
    metrics.labelled(metrics.CATALOG_REEVALUATED, tenant).inc(done.evaluated)
    metrics.labelled(metrics.CATALOG_HOSTS_BEHIND, tenant).set(behind)
    seen = _URGENCIES_SEEN.setdefault(tenant, set())
    seen.update(by_urgency)
    for urgency in seen:
        metrics.labelled(metrics.FINDINGS_OPEN, tenant, urgency).set(by_urgency.get(urgency, 0))


async def run(
    settings: Settings, *, burst: bool = False, stop: asyncio.Event | None = None
) -> PassReport | None:
    """Sweep every `sweep_interval_s` while holding the lock; with `burst`, one pass (if the lock
    is free) and exit. Returns the last pass."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    engine = registry_engine(settings)
    databases = TenantDatabases(settings, RegistryDirectory(engine))
    holder: asyncpg.Connection | None = None
    last: PassReport | None = None
    probes = health(settings)
    readiness = await probes.__aenter__()
    readiness.ready = True
    outage = Outage("sweeper.registry_unavailable", settings, "SILOFLOW_REGISTRY_DSN")
    retries = backoff.delays(settings.retry_max_s)
    catalog = LiveCatalog(settings) if settings.catalog_matching else None
    landed = catalog.landed if catalog is not None else asyncio.Event()  # never set when off
    try:
        if catalog is not None:
            await catalog.start()
        while not stop.is_set():
            landed.clear()
            wait_s = settings.sweep_interval_s
            try:
                if holder is None or holder.is_closed():
                    holder = await _try_lock(settings)
                if holder is not None:
                    async with engine.connect() as conn:
                        tenants = await registry.committable_tenants(conn)
                    last = await sweep_once(settings, databases, tenants, catalog)
                    outage.recovered()
                else:
                    log.info("sweeper.standby", reason="another sweeper holds the lock")
            except Exception as exc:
                if classify(exc) is not Failure.TRANSIENT:
                    raise
                # An outage is retried on the back-off, not a sweep interval later: the
                # registry's return is noticed within SILOFLOW_RETRY_MAX_S.
                wait_s = min(next(retries), wait_s)
                outage.failed(exc, retry_in_s=wait_s)
                holder = None
            else:
                retries = backoff.delays(settings.retry_max_s)
            if burst:
                break
            await first_of(stop, landed, timeout_s=wait_s)  # a new revision: at once
    finally:
        if catalog is not None:
            await catalog.close()
        if holder is not None and not holder.is_closed():
            await holder.close()  # closing the session releases the advisory lock
        await databases.close()
        await engine.dispose()
        await probes.__aexit__(None, None, None)
    return last


async def _try_lock(settings: Settings) -> asyncpg.Connection | None:
    """A registry session holding this namespace's sweeper lock, or None if another has it."""
    conn = await asyncpg.connect(
        settings.registry_url,
        timeout=settings.connect_timeout_s,
        server_settings={"application_name": "siloflow sweeper"},
    )
    if await conn.fetchval("select pg_try_advisory_lock($1)", lock_key(settings.namespace)):
        log.info("sweeper.active")
        return conn
    await conn.close()
    return None
