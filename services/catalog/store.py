"""A catalog import, into the shared partition, as one transaction: readers see the revision
before or the one after, never half of one. The feed streams into a temporary table (COPY, a few
thousand records at a time); its difference from the catalog in force (records added, changed,
removed) becomes a new revision only if there is one: importing the same data again makes no new
revision and says so. The new revision's number is NOTIFYed in the same transaction (delivered
on commit): workers swap their index, re-evaluation starts."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import IO

import asyncpg

from services.catalog import feed
from services.core.db import one_connection, provisioner_url
from services.core.names import Names
from services.core.settings import Settings

CHUNK = 5_000
# One import at a time, whoever runs it (a transaction-scoped advisory lock on the shared database).
IMPORT_LOCK = "siloflow catalog import"
COLUMNS = (
    "release",
    "source",
    "cve_id",
    "status",
    "fixed_version",
    "urgency",
    "scope",
    "description",
)
_DIFFERENCE = """
    select
      (select count(*) from incoming) as total,
      (select count(*) from incoming i where not exists (
          select 1 from shared_advisories a
          where (a.release, a.source, a.cve_id) = (i.release, i.source, i.cve_id))) as added,
      (select count(*) from incoming i join shared_advisories a using (release, source, cve_id)
       where (a.status, a.fixed_version, a.urgency, a.scope, a.description)
             is distinct from
             (i.status, i.fixed_version, i.urgency, i.scope, i.description)) as changed,
      (select count(*) from shared_advisories a
       where a.release = any($1::text[])
         and ($2::text[] is null or a.source = any($2::text[]))
         and not (a.source = any($3::text[]))
         and not exists (
          select 1 from incoming i
          where (i.release, i.source, i.cve_id) = (a.release, a.source, a.cve_id))) as removed,
      (select encode(sha256(convert_to(coalesce(string_agg(
          concat_ws(chr(31), release, source, cve_id, status, fixed_version, urgency, scope,
                    description), chr(30) order by release, source, cve_id), ''), 'UTF8')), 'hex')
       from incoming) as digest
"""


@dataclass(frozen=True)
class Imported:
    """What an import did."""

    revision: int | None  # the new revision; None when nothing changed
    current: int | None  # the revision in force afterwards
    total: int
    added: int
    changed: int
    removed: int
    digest: str
    counts: feed.Counts


@dataclass(frozen=True)
class Revision:
    """A catalog revision, as `catalog status` shows it."""

    id: int
    source: str
    format: str
    releases: list[str]
    imported_at: datetime
    advisories: int
    added: int
    changed: int
    removed: int
    digest: str


@asynccontextmanager
async def shared_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The shared database as its owner, the provisioner (imports write it)."""
    url = provisioner_url(settings).set(database=settings.shared_database)
    async with one_connection(url, settings) as conn:
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        yield driver


def _chunks(records: Iterable[feed.Record]) -> Iterable[list[tuple[object, ...]]]:
    iterator = iter(records)
    while chunk := [astuple(r) for r in itertools.islice(iterator, CHUNK)]:
        yield chunk


async def import_feed(
    settings: Settings,
    stream: IO[bytes],
    *,
    source: str,
    releases: set[str] | None,
) -> Imported:
    """Import a tracker feed (only `releases`, or every release it has). `feed.FeedError` names
    the first bad entry, and then nothing changed."""
    counts = feed.Counts()
    records = feed.read(stream, releases=releases, counts=counts)
    return await import_records(
        settings,
        records,
        counts=counts,
        source=source,
        format_=feed.FORMAT,
        releases=lambda: releases if releases is not None else counts.releases,
    )


async def import_records(
    settings: Settings,
    records: Iterable[feed.Record],
    *,
    counts: feed.Counts,
    source: str,
    format_: str,
    releases: Callable[[], set[str]],
    only_sources: Collection[str] | None = None,
    keep_sources: Collection[str] = (),
) -> Imported:
    """Import records as the catalog's next revision. What they replace: every record of
    `releases()` (asked once the records are read), or only of `only_sources` when given; the
    records of `keep_sources` (sources a build could not read) stay as they are."""
    async with shared_connection(settings) as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtext($1))", IMPORT_LOCK)
        await conn.execute(
            "create temp table incoming (release text, source text, cve_id text, status text, "
            "fixed_version text, urgency text, scope text, description text, "
            "primary key (release, source, cve_id)) on commit drop"
        )
        try:
            for chunk in _chunks(records):
                await conn.copy_records_to_table("incoming", records=chunk, columns=COLUMNS)
        except asyncpg.UniqueViolationError as exc:
            raise feed.FeedError(f"a record is listed twice: {exc.detail or exc}") from None
        scope = sorted(releases())
        replaced = (list(only_sources) if only_sources is not None else None, list(keep_sources))
        difference = await conn.fetchrow(_DIFFERENCE, scope, *replaced)
        assert difference is not None
        current = await conn.fetchval("select max(id) from shared_catalog_revisions")
        changed = difference["added"] + difference["changed"] + difference["removed"]
        if not changed:
            # The same data as the catalog in force: no revision (the transaction ends clean).
            return Imported(
                None,
                current,
                difference["total"],
                0,
                0,
                0,
                difference["digest"],
                counts,
            )
        revision = await conn.fetchval(
            "insert into shared_catalog_revisions (source, format, releases, advisories, added, "
            "changed, removed, digest) values ($1, $2, $3, $4, $5, $6, $7, $8) returning id",
            source,
            format_,
            scope,
            difference["total"],
            difference["added"],
            difference["changed"],
            difference["removed"],
            difference["digest"],
        )
        await conn.execute(
            f"""
            insert into shared_advisories ({", ".join(COLUMNS)}, revision)
            select {", ".join(COLUMNS)}, $1 from incoming
            on conflict (release, source, cve_id) do update
                set status = excluded.status, fixed_version = excluded.fixed_version,
                    urgency = excluded.urgency, scope = excluded.scope,
                    description = excluded.description, revision = excluded.revision
                where (shared_advisories.status, shared_advisories.fixed_version,
                       shared_advisories.urgency, shared_advisories.scope,
                       shared_advisories.description)
                      is distinct from
                      (excluded.status, excluded.fixed_version, excluded.urgency,
                       excluded.scope, excluded.description)
            """,
            revision,
        )
        await conn.execute(
            """
            with gone as (
                delete from shared_advisories a
                where a.release = any($2::text[])
                  and ($3::text[] is null or a.source = any($3::text[]))
                  and not (a.source = any($4::text[]))
                  and not exists (
                    select 1 from incoming i
                    where (i.release, i.source, i.cve_id) = (a.release, a.source, a.cve_id))
                returning a.release, a.source, a.cve_id
            )
            insert into shared_advisories_removed (revision, release, source, cve_id)
            select $1, release, source, cve_id from gone
            """,
            revision,
            scope,
            *replaced,
        )
        # A revision counts the catalog it leaves in force (an import may replace part of it).
        in_force = await conn.fetchval(
            "update shared_catalog_revisions set advisories = "
            "(select count(*) from shared_advisories) where id = $1 returning advisories",
            revision,
        )
        await conn.execute(
            "select pg_notify($1, $2)", Names(settings.namespace).catalog_channel, str(revision)
        )
    return Imported(
        revision,
        revision,
        in_force,
        difference["added"],
        difference["changed"],
        difference["removed"],
        difference["digest"],
        counts,
    )


async def revisions(settings: Settings, limit: int = 10) -> list[Revision]:
    """The latest revisions, newest first."""
    async with shared_connection(settings) as conn:
        rows = await conn.fetch(
            "select id, source, format, releases, imported_at, advisories, added, changed, "
            "removed, digest from shared_catalog_revisions order by id desc limit $1",
            limit,
        )
    return [Revision(**dict(row)) for row in rows]
