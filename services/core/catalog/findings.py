"""A host's findings in its tenant's database: written in the transaction that commits what they
derive from (its packages snapshot, or a system_info that changes its release; the workers), or
when a new catalog revision changes the advisories of a source it has installed (`catch_up`; the
sweeper's re-evaluation). The findings now are compared with the open ones, new ones are opened,
those no longer found are resolved (kept, with `resolved_at`: the tenant keeps its history), and
what the host was evaluated with is recorded (`host_findings_state`). A redelivered or older
report never gets here (the newest-report guard), so a newer snapshot never reopens what an older
one closed, and a redelivery changes nothing. One host is evaluated by one transaction at a time
(a transaction-scoped advisory lock on the host), whoever evaluates it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.core.catalog.matcher import CatalogIndex, Finding, Installed, release_of

_HOST = """
    select h.os_name, h.os_version, s.release, s.catalog_revision, s.packages_digest,
           s.unparsed_versions, s.host_id is not null as known
    from (select $1::uuid as id) q
    left join hosts h on h.id = q.id
    left join host_findings_state s on s.host_id = q.id
"""
_PACKAGES = """
    select name, version, coalesce(source, name) as source,
           coalesce(source_version, version) as source_version
    from host_packages where host_id = $1
"""
_OPEN = """
    select package, cve_id, version, source, source_version, fixed_version, advisory_status,
           urgency, catalog_revision
    from findings where host_id = $1 and resolved_at is null
"""
# New findings go in by COPY: a first evaluation opens hundreds of them, and asyncpg encodes
# COPY's records at about half the CPU of the eight text arrays an `insert ... unnest` needs
# (docs/performance.md, "Session 12").
_OPEN_NEW_COLUMNS = (
    "host_id", "package", "version", "source", "source_version", "cve_id", "fixed_version",
    "advisory_status", "urgency", "catalog_revision", "first_seen",
)  # fmt: skip
_UPDATE = """
    update findings f set version = v.version, source_version = v.source_version,
        fixed_version = v.fixed_version, advisory_status = v.advisory_status,
        urgency = v.urgency, catalog_revision = $4
    from unnest($2::text[], $3::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                $9::text[]) as v(package, cve_id, version, source_version, fixed_version,
                                 advisory_status, urgency)
    where f.host_id = $1 and f.resolved_at is null and f.package = v.package
      and f.cve_id = v.cve_id
"""
_RESOLVE = """
    update findings f set resolved_at = $4
    from unnest($2::text[], $3::text[]) as v(package, cve_id)
    where f.host_id = $1 and f.resolved_at is null and f.package = v.package
      and f.cve_id = v.cve_id
"""
_STATE = """
    insert into host_findings_state (host_id, release, catalog_revision, unparsed_versions,
                                     evaluated_at, packages_digest)
    values ($1, $2, $3, $4, now(), $5)
    on conflict (host_id) do update set release = excluded.release,
        catalog_revision = excluded.catalog_revision,
        unparsed_versions = excluded.unparsed_versions, evaluated_at = excluded.evaluated_at,
        packages_digest = excluded.packages_digest
"""
_UNCHANGED = "update host_findings_state set evaluated_at = now() where host_id = $1"


def host_lock(host_id: uuid.UUID) -> int:
    """The advisory lock id that serialises a host's evaluations (a worker's and the sweeper's)."""
    return int.from_bytes(host_id.bytes[:8], "big", signed=True)


@dataclass(frozen=True)
class Evaluated:
    """What evaluating one host changed."""

    opened: int
    resolved: int
    updated: int
    unparsed: int
    release: str | None
    unchanged: bool = False  # the same packages, release and revision as last time: not matched


def packages_digest(installed: Iterable[Installed]) -> bytes:
    """A digest of a host's packages, whatever their order: findings evaluated against the same
    digest, release and revision are the same findings."""
    digest = hashlib.sha256()
    for entry in sorted((i.package, i.version, i.source, i.source_version) for i in installed):
        digest.update("\x1f".join(entry).encode())
        digest.update(b"\x1e")
    return digest.digest()


def _details(f: Finding) -> tuple[str, str, str | None, str, str]:
    installed, advisory = f
    return (
        installed.version,
        installed.source_version,
        advisory.fixed_version,
        advisory.status,
        advisory.urgency,
    )


def _unique(findings: list[Finding], installed: list[Installed]) -> list[Finding]:
    """The findings, one per (package, CVE): as they are when no package name is listed twice
    (each source's advisories are distinct CVEs), else the first of each."""
    if len({i.package for i in installed}) == len(installed):
        return findings
    return list({(i.package, a.cve_id): (i, a) for i, a in findings}.values())


async def _open_new(
    conn: asyncpg.Connection, host_id: uuid.UUID, new: list[Finding], revision: int, at: datetime
) -> None:
    await conn.copy_records_to_table(
        "findings",
        columns=_OPEN_NEW_COLUMNS,
        # A generator: each record is encoded and let go, never all held at once.
        records=(
            (host_id, i.package, i.version, i.source, i.source_version, a.cve_id,
             a.fixed_version, a.status, a.urgency, revision, at)
            for i, a in new
        ),
    )  # fmt: skip


def _columns(found: list[Finding]) -> list[list[str | None]]:
    """The findings as the statements' arrays: package, version, source, source version, CVE,
    fixed version, advisory status, urgency."""
    return [
        [i.package for i, _ in found],
        [i.version for i, _ in found],
        [i.source for i, _ in found],
        [i.source_version for i, _ in found],
        [a.cve_id for _, a in found],
        [a.fixed_version for _, a in found],
        [a.status for _, a in found],
        [a.urgency for _, a in found],
    ]


async def evaluate(
    conn: asyncpg.Connection,
    index: CatalogIndex,
    host_id: uuid.UUID,
    at: datetime,
    *,
    installed: Iterable[Installed] | None = None,
    only_if_release_changed: bool = False,
    revision_left_to_sweeper: bool = False,
) -> Evaluated | None:
    """Evaluate one host (in the caller's transaction): against `installed` (a snapshot just
    committed) or the packages stored for it. With `only_if_release_changed` (a system_info),
    nothing happens unless its release differs from the one its findings were evaluated with;
    None then. The same packages and release as last time at the same revision need no
    matching; with `revision_left_to_sweeper` (the workers' live path) not at another revision
    either: the host is left at its revision for the sweeper's re-evaluation, so a new revision
    never makes live reports wait behind a host's whole re-evaluation."""
    await conn.execute("select pg_advisory_xact_lock($1)", host_lock(host_id))
    row = await conn.fetchrow(_HOST, host_id)
    assert row is not None
    release = release_of(row["os_name"], row["os_version"])
    if only_if_release_changed and row["known"] and row["release"] == release:
        return None
    if installed is None:
        installed = [
            Installed(r["name"], r["version"], r["source"], r["source_version"])
            for r in await conn.fetch(_PACKAGES, host_id)
        ]
    installed = list(installed)
    digest = packages_digest(installed)
    same_inputs = row["known"] and row["release"] == release and row["packages_digest"] == digest
    if same_inputs and (row["catalog_revision"] == index.revision or revision_left_to_sweeper):
        # Matching again would find what is open: only say when it was looked at.
        await conn.execute(_UNCHANGED, host_id)
        return Evaluated(0, 0, 0, row["unparsed_versions"], release, unchanged=True)
    match = index.match(release, installed)
    open_rows = {(r["package"], r["cve_id"]): r for r in await conn.fetch(_OPEN, host_id)}
    if not open_rows:
        # Nothing open (a host's first evaluation, most often): every finding is new, written
        # straight from the match, without the diff's dictionaries (a 2,000-package host has
        # some 11,000 findings, and the diff would hold three tuples for each).
        new = _unique(match.findings, installed)
        if new:
            await _open_new(conn, host_id, new, index.revision, at)
        await conn.execute(_STATE, host_id, release, index.revision, match.unparsed, digest)
        return Evaluated(len(new), 0, 0, match.unparsed, release)
    found = {(i.package, a.cve_id): (i, a) for i, a in match.findings}
    new = [f for key, f in found.items() if key not in open_rows]
    gone = [key for key in open_rows if key not in found]
    # Still found, but not as it was (an upgrade that is not yet the fix, a catalog change).
    changed = [
        f
        for key, f in found.items()
        if key in open_rows
        and _details(f)
        != tuple(
            open_rows[key][c]
            for c in ("version", "source_version", "fixed_version", "advisory_status", "urgency")
        )
    ]
    if new:
        await _open_new(conn, host_id, new, index.revision, at)
    if changed:
        package, version, _source, source_version, cve, fixed, status, urgency = _columns(changed)
        await conn.execute(
            _UPDATE,
            host_id,
            package,
            cve,
            index.revision,
            version,
            source_version,
            fixed,
            status,
            urgency,
        )
    if gone:
        await conn.execute(_RESOLVE, host_id, [p for p, _ in gone], [c for _, c in gone], at)
    await conn.execute(_STATE, host_id, release, index.revision, match.unparsed, digest)
    return Evaluated(len(new), len(gone), len(changed), match.unparsed, release)


# A catalog revision's difference, as re-evaluation needs it: the (release, source) pairs whose
# advisories were added, changed or removed after one revision, up to another.
Changes = Callable[[int, int], Awaitable[set[tuple[str, str]]]]

_NEVER_EVALUATED = """
    select distinct p.host_id from host_packages p
    where not exists (select 1 from host_findings_state s where s.host_id = p.host_id)
"""
_BEHIND = """
    select catalog_revision, count(*) as hosts from host_findings_state
    where catalog_revision is distinct from $1 group by catalog_revision
"""
_TOUCHED = """
    select distinct s.host_id from host_findings_state s
    join host_packages p on p.host_id = s.host_id
    join unnest($2::text[], $3::text[]) as c(release, source)
      on c.release = s.release and c.source = coalesce(p.source, p.name)
    where s.catalog_revision is not distinct from $1
"""
_MOVE_ON = """
    update host_findings_state set catalog_revision = $2
    where catalog_revision is not distinct from $1
"""


@dataclass
class CatchUp:
    """What bringing one tenant to a revision did."""

    evaluated: int = 0  # hosts matched again
    moved_on: int = 0  # hosts whose sources no changed advisory touches: recorded as current
    opened: int = 0
    resolved: int = 0


async def catch_up(
    conn: asyncpg.Connection, index: CatalogIndex, changes: Changes, *, duty: float = 1.0
) -> CatchUp:
    """Bring every host of one tenant database to the index's revision, each in a transaction of
    its own (a pass cut short anywhere resumes where it was: a host's recorded revision is
    written with its findings). A host never evaluated is matched whole; one evaluated with an
    earlier revision only if a source it has installed had its advisories changed since, for its
    release; the others are recorded as current without matching (a daily feed update touches
    a few sources, not a fleet).

    `duty` (0 to 1] paces it: after each host it rests so that its work is at most that share
    of its time, leaving the rest to live reports (background work yields)."""
    done = CatchUp()
    now = datetime.now(UTC)

    async def one(host_id: uuid.UUID) -> None:
        started = time.monotonic()
        async with conn.transaction():
            result = await evaluate(conn, index, host_id, now)
        if duty < 1.0:
            await asyncio.sleep((time.monotonic() - started) * (1.0 - duty) / duty)
        done.evaluated += 1
        if result is not None:
            done.opened += result.opened
            done.resolved += result.resolved

    for row in await conn.fetch(_NEVER_EVALUATED):
        await one(row["host_id"])
    for row in await conn.fetch(_BEHIND, index.revision):
        since = row["catalog_revision"]
        if since is None:
            touched = [
                r["host_id"]
                for r in await conn.fetch(
                    "select host_id from host_findings_state where catalog_revision is null"
                )
            ]
        else:
            pairs = sorted(await changes(since, index.revision))
            touched = [
                r["host_id"]
                for r in await conn.fetch(
                    _TOUCHED, since, [p[0] for p in pairs], [p[1] for p in pairs]
                )
            ]
        for host_id in touched:
            await one(host_id)
        moved = await conn.execute(_MOVE_ON, since, index.revision)
        done.moved_on += int(moved.split()[-1])
    return done


_SUMMARY = """
    select (select count(*) from host_findings_state
            where catalog_revision is distinct from $1) as behind,
           coalesce((select json_object_agg(urgency, n) from (
               select urgency, count(*) as n from findings where resolved_at is null
               group by urgency) u), '{}') as open
"""


async def summary(conn: asyncpg.Connection, revision: int) -> tuple[int, dict[str, int]]:
    """Hosts not at `revision`, and open findings by urgency, of one tenant database."""
    row = await conn.fetchrow(_SUMMARY, revision)
    assert row is not None
    opened = row["open"]
    return int(row["behind"]), dict(json.loads(opened) if isinstance(opened, str) else opened)
