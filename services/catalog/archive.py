"""What the Debian archive's indexes say (pure): control-file stanzas, a signed Release file's
checksums and validity, the binary packages a `Packages` index lists, and the newest upload of
each source across a release's suites with the binaries that carry its changelog.

Written here rather than taken from python-debian: that library is GPL-2+, siloflow is
Apache-2.0, and the little of it needed (RFC 822-style stanzas) is a few lines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from services.core.catalog import versions
from services.core.errors import ArchiveError

# Where each suite of a release lives: the main archive (the release with its point releases,
# and -updates) and the security archive (-security).
MAIN_SUITES = ("{release}", "{release}-updates")
SECURITY_SUITES = ("{release}-security",)
PACKAGES_INDEX = "main/binary-{arch}/Packages.xz"
_SOURCE_FIELD = re.compile(r"^(?P<name>\S+)(?: \((?P<version>[^()\s]+)\))?$")


def stanzas(text: str | Iterable[str]) -> Iterator[dict[str, str]]:
    """The stanzas of a Debian control file (its text, or its lines as a stream): field names as
    written, continuation lines kept (joined with newlines, their leading space removed)."""
    fields: dict[str, str] = {}
    name = ""
    for raw in text.splitlines() if isinstance(text, str) else text:
        line = raw.rstrip("\n")
        if not line.strip():
            if fields:
                yield fields
            fields, name = {}, ""
        elif line[0] in " \t":
            if not name:
                raise ArchiveError(f"a continuation line before any field: {line[:80]!r}")
            fields[name] += "\n" + line[1:]
        elif not line.startswith("#"):
            name, sep, value = line.partition(":")
            if not sep:
                raise ArchiveError(f"a line that is no field: {line[:80]!r}")
            fields[name] = value.strip()
    if fields:
        yield fields


@dataclass(frozen=True)
class Release:
    """A suite's Release file, as its (verified) signature covers it."""

    suite: str
    valid_until: datetime | None
    sha256: dict[str, tuple[str, int]]  # path -> (digest, size)
    # The archive also serves each index under its digest (`by-hash/SHA256/<hex>`), so a
    # client reads the very file this Release names even while the archive is being updated.
    by_hash: bool = False

    def url_path(self, path: str) -> str:
        """Where `path` (a key of `sha256`) is read: under its digest when the archive offers
        that, as apt does; a plain path can already hold the next publication's file."""
        if not self.by_hash:
            return path
        folder, _, _ = path.rpartition("/")
        return f"{folder}/by-hash/SHA256/{self.sha256[path][0]}".lstrip("/")


def release_file(text: str) -> Release:
    """Parse the body of an (In)Release file."""
    found = list(stanzas(text))
    if not found:
        raise ArchiveError("an empty Release file")
    fields = found[0]
    sums: dict[str, tuple[str, int]] = {}
    for line in fields.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            sums[parts[2]] = (parts[0], int(parts[1]))
    until = fields.get("Valid-Until")
    return Release(
        suite=fields.get("Codename") or fields.get("Suite", "?"),
        valid_until=parsedate_to_datetime(until) if until else None,
        sha256=sums,
        by_hash=fields.get("Acquire-By-Hash", "").strip().lower() == "yes",
    )


@dataclass(frozen=True)
class Binary:
    """A binary package in one suite's index: what it was built from and where its file is."""

    package: str
    version: str
    source: str
    source_version: str
    suite: str
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Upload:
    """A source package's version, and the binaries built from it, smallest first: each carries
    the upload's changelog as `usr/share/doc/<package>/changelog.Debian.gz` (unless its doc
    directory is a link to another binary's)."""

    source: str
    version: str
    binaries: tuple[Binary, ...]


def binaries(
    text: str | Iterable[str], suite: str, wanted: frozenset[str] | None = None
) -> Iterator[Binary]:
    """The binary packages a `Packages` index lists (only those built from `wanted` sources,
    when given)."""
    for fields in stanzas(text):
        package, version = fields.get("Package", ""), fields.get("Version", "")
        named = _SOURCE_FIELD.match(fields.get("Source", package))
        if not package or not named or not versions.valid(version):
            raise ArchiveError(f"{suite}: a stanza without a valid Package, Source and Version")
        source = named.group("name")
        if wanted is not None and source not in wanted:
            continue
        source_version = named.group("version") or version
        try:
            size = int(fields["Size"])
            filename, sha256 = fields["Filename"], fields["SHA256"]
        except (KeyError, ValueError):
            raise ArchiveError(
                f"{suite}: {package} {version}: no Filename, Size or SHA256"
            ) from None
        if filename.startswith("/") or ".." in filename.split("/"):
            raise ArchiveError(f"{suite}: {package} {version}: a Filename outside the pool")
        yield Binary(package, version, source, source_version, suite, filename, size, sha256)


def newest(found: Iterable[Binary]) -> dict[str, Upload]:
    """The newest upload of each source, in dpkg's order, across suites (its changelog holds
    every upload before it), with the binaries built from it."""
    best: dict[str, tuple[str, list[Binary]]] = {}
    for binary in found:
        held = best.get(binary.source)
        if held is None or versions.compare(binary.source_version, held[0]) > 0:
            best[binary.source] = (binary.source_version, [binary])
        elif binary.source_version == held[0]:
            held[1].append(binary)
    return {
        source: Upload(source, version, tuple(sorted(built, key=lambda b: (b.size, b.package))))
        for source, (version, built) in best.items()
    }
