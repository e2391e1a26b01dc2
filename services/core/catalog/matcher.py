"""Which of a host's packages are affected by which advisory (pure): the in-memory index of one
catalog revision, and the rule.

The rule, as Debian's own tools apply it: an advisory is keyed by source package and release; a
package is affected when the advisory for its source is `open` or `undetermined`, or when it is
`resolved` with a `fixed_version` above the installed *source* version in dpkg's order. A
`fixed_version` of `0` means the release was never affected (no finding). A host whose release is
unknown gets no findings (its state says so). A version dpkg would refuse gives no finding and is
counted."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat

from services.core.catalog import versions
from services.core.domain import ADVISORY_STATUSES

# Debian's releases by number, for `os_version` values such as "12" or "12.5".
RELEASE_NUMBERS = {
    "8": "jessie",
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
    "15": "duke",
}
# Every codename the tracker uses (a release outside it is refused by the importers).
RELEASES = frozenset({*RELEASE_NUMBERS.values(), "wheezy", "squeeze", "lenny", "sid"})
NEVER_AFFECTED = "0"
STATUSES = ADVISORY_STATUSES
UNFIXED = frozenset({"open", "undetermined"})
_CODENAME = re.compile(r"\(([a-z]+)\)")
_NUMBER = re.compile(r"^\s*(\d+)")


def release_of(os_name: str | None, os_version: str | None) -> str | None:
    """A host's Debian release from its system_info (`Debian GNU/Linux`, `12 (bookworm)` or
    `12` -> `bookworm`); None when it is not Debian or the version says nothing known."""
    if not os_name or "debian" not in os_name.lower() or not os_version:
        return None
    named = _CODENAME.search(os_version)
    if named and named.group(1) in RELEASES:
        return named.group(1)
    number = _NUMBER.match(os_version)
    return RELEASE_NUMBERS.get(number.group(1)) if number else None


@dataclass(frozen=True, slots=True)
class Advisory:
    """One catalog record, as matching needs it."""

    cve_id: str
    status: str
    fixed_version: str | None
    urgency: str


@dataclass(frozen=True, slots=True)
class Installed:
    """One installed binary package and the source it was built from."""

    package: str
    version: str
    source: str
    source_version: str


# An installed package affected by an advisory. A pair, not an object of its own: a host with an
# old kernel has thousands, and building an object each costs more than all the matching.
Finding = tuple[Installed, Advisory]


@dataclass
class _SourceAdvisories:
    """The advisories of one (release, source): those affecting every version, and the fixed
    ones in the order of their fixed versions, so one bisection finds those above a version."""

    unfixed: list[Advisory] = field(default_factory=list)
    fixed: list[Advisory] = field(default_factory=list)
    keys: list[versions.Key] = field(default_factory=list)


@dataclass(frozen=True)
class Match:
    """A host's findings, and how many of its packages had a version that does not parse."""

    findings: list[Finding]
    unparsed: int


class CatalogIndex:
    """One catalog revision in memory, by (release, source package)."""

    def __init__(
        self,
        revision: int,
        imported_at: datetime | None,
        records: Iterable[tuple[str, str, Advisory]],
    ) -> None:
        """Index (release, source, advisory) records of the revision imported at `imported_at`.
        A record fixed in version `0` (never affected) is left out, and so is one whose fixed
        version does not parse (the importers refuse those: this only guards)."""
        self.revision = revision
        self.imported_at = imported_at
        self.size = 0
        self._by_source: dict[tuple[str, str], _SourceAdvisories] = {}
        pending: dict[tuple[str, str], list[tuple[versions.Key, Advisory]]] = {}
        for release, source, advisory in records:
            if advisory.status in UNFIXED:
                entry = self._by_source.setdefault((release, source), _SourceAdvisories())
                entry.unfixed.append(advisory)
            elif advisory.fixed_version and advisory.fixed_version != NEVER_AFFECTED:
                try:
                    fixed = versions.key(advisory.fixed_version)
                except ValueError:
                    continue
                pending.setdefault((release, source), []).append((fixed, advisory))
            else:
                continue
            self.size += 1
        for where, fixed_list in pending.items():
            fixed_list.sort(key=lambda item: item[0])
            entry = self._by_source.setdefault(where, _SourceAdvisories())
            entry.fixed = [a for _, a in fixed_list]
            entry.keys = [k for k, _ in fixed_list]

    def match(self, release: str | None, installed: Iterable[Installed]) -> Match:
        """The findings of a host of `release` with these packages installed."""
        if release is None:
            return Match([], 0)
        findings: list[Finding] = []
        unparsed = 0
        for package in installed:
            entry = self._by_source.get((release, package.source))
            if entry is None:
                continue
            try:
                key = versions.key(package.source_version)
            except ValueError:
                unparsed += 1
                continue
            # Pairs made in C (zip over a repeat): a kernel matches thousands of advisories.
            findings.extend(zip(repeat(package), entry.unfixed))
            findings.extend(
                zip(repeat(package), entry.fixed[bisect.bisect_right(entry.keys, key) :])
            )
        return Match(findings, unparsed)


def installed_of(entries: Iterable[dict[str, str]]) -> list[Installed]:
    """A packages report's entries as installed packages: the source and its version default to
    the binary's own (protocol v1 without them)."""
    return [
        Installed(
            e["name"],
            e["version"],
            e.get("source") or e["name"],
            e.get("source_version") or e["version"],
        )
        for e in entries
    ]
