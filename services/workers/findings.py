"""A host's findings, written in the transaction that commits what they derive from (its packages
snapshot, or a system_info that changes its release): the findings now are compared with the
open ones, new ones are opened, those no longer found are resolved (kept, with `resolved_at`: the
tenant keeps its history), and what the host was evaluated with is recorded. A redelivered or
older report never gets here (the newest-report guard), so a newer snapshot never reopens what an
older one closed, and a redelivery changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.core.catalog.matcher import CatalogIndex, Finding, Installed, release_of

_HOST = """
    select h.os_name, h.os_version, s.release, s.catalog_revision, s.host_id is not null as known
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
_OPEN_NEW = """
    insert into findings (host_id, package, version, source, source_version, cve_id,
                          fixed_version, advisory_status, urgency, catalog_revision, first_seen)
    select $1::uuid, *, $10::int, $11::timestamptz
    from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[])
"""
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
                                     evaluated_at)
    values ($1, $2, $3, $4, now())
    on conflict (host_id) do update set release = excluded.release,
        catalog_revision = excluded.catalog_revision,
        unparsed_versions = excluded.unparsed_versions, evaluated_at = excluded.evaluated_at
"""


@dataclass(frozen=True)
class Evaluated:
    """What evaluating one host changed."""

    opened: int
    resolved: int
    updated: int
    unparsed: int
    release: str | None


def _details(f: Finding) -> tuple[str, str, str | None, str, str]:
    installed, advisory = f
    return (
        installed.version,
        installed.source_version,
        advisory.fixed_version,
        advisory.status,
        advisory.urgency,
    )


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
) -> Evaluated | None:
    """Evaluate one host (in the caller's transaction): against `installed` (a snapshot just
    committed) or the packages stored for it. With `only_if_release_changed` (a system_info),
    nothing happens unless its release differs from the one its findings were evaluated with;
    None then."""
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
    match = index.match(release, installed)
    found = {(i.package, a.cve_id): (i, a) for i, a in match.findings}
    open_rows = {(r["package"], r["cve_id"]): r for r in await conn.fetch(_OPEN, host_id)}
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
        await conn.execute(_OPEN_NEW, host_id, *_columns(new), index.revision, at)
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
    await conn.execute(_STATE, host_id, release, index.revision, match.unparsed)
    return Evaluated(len(new), len(gone), len(changed), match.unparsed, release)
