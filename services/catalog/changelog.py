"""Advisories from a Debian changelog (pure): every CVE id an upload's entry names, fixed in the
earliest upload that names it, at that upload's urgency, described by the changelog item that
names it. The method Vuls uses where the security tracker is out of reach.

What a changelog cannot say, and so this cannot: CVEs not fixed yet, no-dsa or ignored states,
CVSS; an entry that names a CVE it did not fix is taken at its word."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from services.core.catalog import versions

# What earlier builds read is kept per version of these rules: a change here makes them read again.
RULES_VERSION = 1
CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_HEADER = re.compile(
    r"^(?P<source>[a-z0-9][a-z0-9+.-]+) \((?P<version>[^()\s]+)\) [^;]*;(?P<opts>.*)$"
)
_URGENCY = re.compile(r"urgency=([A-Za-z]+)")
_TRAILER = " -- "
# `[ Name ]` heads the changes one of several maintainers made (not text; `[CVE-...]` is).
_MAINTAINER = re.compile(r"^\s*\[ [^\]]+ \]\s*$")
_BULLET = re.compile(r"^(\s*)[*+-]\s+")
# A catalog record's description is the changelog item, cut here (the item, not the patch).
MAX_DESCRIPTION_CHARS = 300


@dataclass(frozen=True, slots=True)
class Entry:
    """One upload in a changelog: its version, urgency and the items of its text."""

    version: str
    urgency: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Fix:
    """A CVE and the earliest upload that names it."""

    cve_id: str
    fixed_version: str
    urgency: str
    description: str


def _items(body: list[str]) -> Iterator[str]:
    """The items of an entry's body, in order: each bullet (at any depth) with its continuation
    lines joined by spaces, up to the next bullet, a blank line or a line no deeper than it.
    A line of text outside any bullet (release notes pasted in, old changelogs) is an item of
    its own; `[ Name ]` lines are not text."""
    item: list[str] = []
    depth = 0
    for line in body:
        stripped = line.strip()
        if _MAINTAINER.match(line):
            continue
        indent = len(line) - len(line.lstrip())
        bullet = _BULLET.match(line)
        if item and stripped and not bullet and indent > depth:
            item.append(stripped)
            continue
        if item:
            yield " ".join(item)
            item = []
        if bullet:
            item, depth = [line[bullet.end() :].strip()], indent
        elif stripped:
            yield stripped
    if item:
        yield " ".join(item)


def entries(text: str) -> Iterator[Entry]:
    """The entries of a changelog, newest first. Lines outside any entry (vim modelines, old
    free-form history) and entries whose version dpkg would refuse are passed over."""
    version: str | None = None
    urgency = "medium"
    body: list[str] = []
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            if version is not None:
                yield Entry(version, urgency, tuple(_items(body)))
            candidate = header.group("version")
            version = candidate if versions.valid(candidate) else None
            found = _URGENCY.search(header.group("opts"))
            urgency = found.group(1).lower() if found else "medium"
            body = []
        elif line.startswith(_TRAILER):
            if version is not None:
                yield Entry(version, urgency, tuple(_items(body)))
            version, body = None, []
        elif version is not None:
            body.append(line)
    if version is not None:
        yield Entry(version, urgency, tuple(_items(body)))


def fixes(text: str) -> list[Fix]:
    """Each CVE the changelog names, at the lowest version (dpkg's order) of the uploads that
    name it, described by that upload's items that name it; sorted by CVE id.

    An entry above the changelog's own (newest) version, such as an unstable upload that a
    stable update was then made from (`1.3` before `1.3~deb12u1`), reached this line of uploads
    with the next upload after it that is not above: that is its fixed version here."""
    found: dict[str, Fix] = {}
    newest: str | None = None
    landed: str | None = None  # the oldest upload read so far that is not above `newest`
    for entry in entries(text):
        newest = newest or entry.version
        if versions.compare(entry.version, newest) <= 0:
            landed = entry.version
        naming: dict[str, list[str]] = {}
        for item in entry.items:
            for cve_id in dict.fromkeys(CVE.findall(item)):
                naming.setdefault(cve_id, []).append(item)
        for cve_id, items in naming.items():
            fixed = (
                entry.version
                if landed is None or versions.compare(entry.version, newest) <= 0
                else landed
            )
            held = found.get(cve_id)
            if held is None or versions.compare(fixed, held.fixed_version) < 0:
                described = " / ".join(items)[:MAX_DESCRIPTION_CHARS]
                found[cve_id] = Fix(cve_id, fixed, entry.urgency, described)
    return sorted(found.values(), key=lambda fix: fix.cve_id)
