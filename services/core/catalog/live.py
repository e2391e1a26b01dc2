"""The catalog revision in force, held in memory by each process that matches (the workers, the
sweeper's re-evaluation) and swapped whole when an import commits a new one (its NOTIFY on the
shared database): matching never queries the shared database per report, and never joins
across databases."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import asyncpg
import structlog

from services.core import metrics
from services.core.catalog.matcher import Advisory, CatalogIndex
from services.core.diagnosis import Outage
from services.core.failures import CONNECTION_ERRORS
from services.core.names import Names
from services.core.registry.notices import NoticeListener
from services.core.settings import Settings

log = structlog.get_logger(__name__)

_LATEST = "select id, imported_at from shared_catalog_revisions order by id desc limit 1"
_RECORDS = "select release, source, cve_id, status, fixed_version, urgency from shared_advisories"


async def load_index(settings: Settings, have: int | None = None) -> CatalogIndex | None:
    """The revision in force, read in one snapshot (None: nothing imported yet); when it is
    `have`, None too (nothing to swap)."""
    conn = await asyncpg.connect(settings.shared_url, timeout=settings.connect_timeout_s)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            try:
                latest = await conn.fetchrow(_LATEST)
            except asyncpg.UndefinedTableError:
                return None  # the shared chain is not migrated yet: no catalog
            if latest is None or latest["id"] == have:
                return None
            revision, imported_at = latest["id"], latest["imported_at"]
            records = await conn.fetch(_RECORDS)
    finally:
        await conn.close()
    return CatalogIndex(
        revision,
        imported_at,
        (
            (
                r["release"],
                r["source"],
                Advisory(r["cve_id"], r["status"], r["fixed_version"], r["urgency"]),
            )
            for r in records
        ),
    )


_CHANGES = """
    select release, source from shared_advisories where revision > $1 and revision <= $2
    union
    select release, source from shared_advisories_removed where revision > $1 and revision <= $2
"""


async def changed_sources(settings: Settings, since: int, upto: int) -> set[tuple[str, str]]:
    """The (release, source) pairs whose advisories revisions after `since`, up to `upto`,
    added, changed or removed. (A record changed again later carries the later revision: a
    pass up to `upto` leaves it to the pass after, which sees it.)"""
    conn = await asyncpg.connect(settings.shared_url, timeout=settings.connect_timeout_s)
    try:
        rows = await conn.fetch(_CHANGES, since, upto)
    finally:
        await conn.close()
    return {(r["release"], r["source"]) for r in rows}


def settle_heap() -> None:
    """Move what the process holds now (the index above all: tens of thousands of objects) out
    of the cyclic collector's reach. Matching a snapshot allocates thousands of findings, which
    triggers collections; each full one walked the whole index, and that was the p99 of a match
    (50 ms against a p50 of 3 ms; `make bench-matching`). Objects so frozen are still freed by
    reference counting when an index is swapped out."""
    gc.collect()
    gc.freeze()


class LiveCatalog:
    """`index`: the revision in force (None until one is imported, or while the shared database
    could not be read yet: then findings wait, and nothing is resolved for lack of a catalog).
    `landed` is set whenever a new revision is swapped in."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.index: CatalogIndex | None = None
        self.landed = asyncio.Event()
        self._changed = asyncio.Event()
        self._outage = Outage("catalog.unavailable", settings, "SILOFLOW_REGISTRY_DSN")
        self._notices = NoticeListener(
            settings,
            Names(settings.namespace).catalog_channel,
            on_notice=lambda _revision: self._changed.set(),
            on_reset=lambda _why: self._changed.set(),
            name="catalog",
            dsn=settings.shared_url,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the revision in force, then follow new ones."""
        await self.refresh()
        self._notices.start()
        self._task = asyncio.create_task(self._follow(), name="catalog")

    async def close(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._notices.close()

    async def refresh(self) -> None:
        """Swap in the revision in force, if it is not the one held."""
        have = self.index.revision if self.index is not None else None
        try:
            loaded = await load_index(self._settings, have)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError, OSError) as exc:
            self._outage.failed(exc, retry_in_s=self._settings.retry_max_s)
            return
        self._outage.recovered()
        if loaded is not None:
            self.index = loaded
            settle_heap()
            self.landed.set()
            metrics.CATALOG_REVISION.set(loaded.revision)
            log.info("catalog.loaded", revision=loaded.revision, advisories=loaded.size)

    async def _follow(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), self._settings.retry_max_s)
            except TimeoutError:
                if self.index is not None:
                    continue  # quiet: the notices say when a revision lands
            self._changed.clear()
            await self.refresh()
