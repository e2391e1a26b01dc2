"""The Debian Security Tracker's JSON, read as a stream: `{source: {CVE: {description, scope,
debianbug, releases: {codename: {status, fixed_version, urgency, repositories}}}}}`, the feed
Grype's vunnel reads. The full feed covers every release and tens of thousands of CVEs: it is
parsed one source package at a time (ijson), never held whole.

Every record is checked, and the first bad one stops the import with a line naming it (the
revision in force stays): a source name, a CVE id, a status, a fixed version dpkg would refuse, a
release Debian never had, an over-long description. The tracker's `TEMP-...` ids (issues that
have no CVE id yet) are not CVEs: they are skipped and counted, never stored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson

from services.core.catalog import versions
from services.core.catalog.matcher import NEVER_AFFECTED, RELEASES, STATUSES
from services.core.errors import InvalidArgument

FORMAT = "debian-tracker"
CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,}$")
TEMPORARY_ID = re.compile(r"^TEMP-\d+-[0-9A-Fa-f]+$")
# Debian Policy 5.6.1: lower case letters, digits, + - . ; at least two, starting alphanumeric.
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
URGENCY = re.compile(r"^[a-z*][a-z0-9* ()-]{0,39}$")
MAX_DESCRIPTION_CHARS = 10_000
MAX_SCOPE_CHARS = 200


class FeedError(InvalidArgument):
    """Raised when a feed is not what its format says: names the entry and what is wrong."""


@dataclass(frozen=True, slots=True)
class Record:
    """One advisory: a (release, source package, CVE) and what the tracker says of it."""

    release: str
    source: str
    cve_id: str
    status: str
    fixed_version: str | None
    urgency: str
    scope: str | None
    description: str | None


@dataclass
class Counts:
    """What reading a feed saw besides its records."""

    records: int = 0
    sources: int = 0
    temporary_ids: int = 0  # TEMP-... entries: no CVE id yet
    other_releases: int = 0  # records of releases not asked for
    releases: set[str] = field(default_factory=set)


def _text(value: Any, where: str, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FeedError(f"{where}: {what} is not text ({type(value).__name__})")
    if len(value) > limit:
        raise FeedError(f"{where}: {what} is {len(value):,} characters, over {limit:,}")
    return value


def _record(
    source: str, cve_id: str, release: str, entry: dict[str, Any], info: dict[str, Any]
) -> Record:
    where = f"{source} {cve_id} {release}"
    if not isinstance(info, dict):
        raise FeedError(f"{where}: not an object")
    status = info.get("status")
    if status not in STATUSES:
        raise FeedError(f"{where}: status {status!r} is none of {', '.join(STATUSES)}")
    fixed = info.get("fixed_version")
    if fixed is not None and (
        not isinstance(fixed, str) or (fixed != NEVER_AFFECTED and not versions.valid(fixed))
    ):
        raise FeedError(f"{where}: fixed_version {fixed!r} is not a version dpkg would take")
    if status == "resolved" and fixed is None:
        raise FeedError(f"{where}: resolved without a fixed_version")
    urgency = info.get("urgency") or "not yet assigned"
    if not isinstance(urgency, str) or not URGENCY.match(urgency):
        raise FeedError(f"{where}: urgency {urgency!r} is not one the tracker uses")
    return Record(
        release=release,
        source=source,
        cve_id=cve_id,
        status=status,
        fixed_version=fixed,
        urgency=urgency,
        scope=_text(entry.get("scope"), where, "scope", MAX_SCOPE_CHARS),
        description=_text(entry.get("description"), where, "description", MAX_DESCRIPTION_CHARS),
    )


def read(stream: IO[bytes], *, releases: set[str] | None, counts: Counts) -> Iterator[Record]:
    """The records of a tracker feed, one source package at a time; only `releases` (None:
    all). `FeedError` at the first bad entry; `counts` says what was seen."""
    if releases is not None and (unknown := releases - RELEASES):
        raise FeedError(f"--release {', '.join(sorted(unknown))}: no Debian release is named so")
    try:
        for source, cves in ijson.kvitems(stream, "", use_float=True):
            if not SOURCE_NAME.match(source):
                raise FeedError(f"source package {source[:80]!r}: not a Debian source name")
            if not isinstance(cves, dict):
                raise FeedError(f"{source}: not an object of CVE ids")
            counts.sources += 1
            for cve_id, entry in cves.items():
                if TEMPORARY_ID.match(cve_id):
                    counts.temporary_ids += 1
                    continue
                if not CVE_ID.match(cve_id):
                    raise FeedError(f"{source} {cve_id[:80]!r}: not a CVE id (CVE-YYYY-NNNN)")
                per_release = entry.get("releases") if isinstance(entry, dict) else None
                if not isinstance(per_release, dict):
                    raise FeedError(f"{source} {cve_id}: no releases object")
                for release, info in per_release.items():
                    if release not in RELEASES:
                        raise FeedError(
                            f"{source} {cve_id}: no Debian release is named {release!r}"
                        )
                    if releases is not None and release not in releases:
                        counts.other_releases += 1
                        continue
                    counts.records += 1
                    counts.releases.add(release)
                    yield _record(source, cve_id, release, entry, info)
    except ijson.JSONError as exc:
        why = " ".join(str(exc).split())  # ijson's lexer error spans lines
        raise FeedError(f"not JSON in the tracker's shape: {why}") from None
