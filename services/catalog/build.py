"""The catalog built from the Debian archive apt reaches, for sites the security tracker cannot
reach: each suite's signed index (checked with gpgv against the archive keyring, its validity
date, then each file's SHA-256), the newest upload of each source, and the CVE ids its
`changelog.Debian` names (`changelog.py`).

Incremental: what was read of each upload is kept under a cache directory, so a later build
downloads only uploads not read before (and an index only when the archive changed it).
Bounded: every download has a size limit known before it starts (the signed index gives each
file's size), streamed to a temporary file, never held in memory; a changelog is read up to a
limit too. A source whose upload cannot be read within them is skipped, named, and keeps the
records an earlier revision had for it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import lzma
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

import httpx

from services.catalog import archive, changelog, debfile
from services.catalog.feed import Record
from services.core.errors import ArchiveError, ArchiveUnavailable

FORMAT = "debian-archive"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_SOURCES = Path("/etc/apt")
MAX_INRELEASE_BYTES = 4 * 1024 * 1024
MAX_CHANGELOG_BYTES = 32 * 1024 * 1024
# Binaries of one upload tried, smallest first, before its source is skipped: metapackages and
# binaries whose documentation links to another's carry no changelog of their own.
MAX_ATTEMPTS = 40
CONCURRENCY = 4
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Mirrors:
    """Where the main archive (the release, its point releases, -updates) and the security
    archive (-security) are."""

    main: str
    security: str


@dataclass(frozen=True)
class Plan:
    """What a build will read: uploads in all, those read before, those left to read."""

    uploads: int
    cached: int
    to_read: int


@dataclass
class Built:
    """What a build read, and the records it made."""

    release: str
    mirrors: Mirrors
    sources: int = 0
    uploads_read: int = 0
    uploads_cached: int = 0
    downloaded_bytes: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why
    records: list[Record] = field(default_factory=list)


def apt_mirrors(release: str, root: Path = APT_SOURCES) -> Mirrors:
    """The mirrors apt is configured with for `release` and `release-security` (one-line and
    deb822 sources), else Debian's own."""
    main = security = None
    for uri, suites in _apt_entries(root):
        if release in suites and main is None:
            main = uri
        if f"{release}-security" in suites and security is None:
            security = uri
    return Mirrors(
        (main or DEFAULT_MIRROR).rstrip("/"), (security or DEFAULT_SECURITY_MIRROR).rstrip("/")
    )


def _apt_entries(root: Path) -> Iterator[tuple[str, set[str]]]:
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for fields in archive.stanzas(text):
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled") != "no":
                    for uri in fields.get("URIs", "").split():
                        yield uri, set(fields.get("Suites", "").split())
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in text.splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], {words[2]}


class _Fetcher:
    """Bounded, digest-checked downloads over one HTTP client."""

    def __init__(self, client: httpx.AsyncClient, built: Built) -> None:
        self._client, self._built = client, built

    async def to_file(self, url: str, spool: IO[bytes], *, size: int | None, limit: int) -> None:
        """Stream `url` into `spool`; refuse it past `limit` bytes (or `size` when known)."""
        bound = min(size, limit) if size is not None else limit
        if size is not None and size > limit:
            raise ArchiveError(f"{url}: {size:,} bytes, over the {limit:,}-byte bound")
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ArchiveUnavailable(f"{url}: HTTP {response.status_code}")
                got = 0
                async for chunk in response.aiter_bytes():
                    got += len(chunk)
                    if got > bound:
                        raise ArchiveError(f"{url}: more than the {bound:,} bytes expected")
                    spool.write(chunk)
        except httpx.HTTPError as exc:
            raise ArchiveUnavailable(f"{url}: {exc}") from None
        self._built.downloaded_bytes += got
        spool.flush()
        spool.seek(0)

    async def checked(
        self, url: str, spool: IO[bytes], *, size: int, sha256: str, limit: int
    ) -> None:
        """Download a file the signed index describes, and check it is that file."""
        await self.to_file(url, spool, size=size, limit=limit)
        digest = hashlib.sha256()
        while block := spool.read(1 << 20):
            digest.update(block)
        if digest.hexdigest() != sha256:
            raise ArchiveError(f"{url}: its SHA-256 is not the one the signed index gives")
        spool.seek(0)


def verified_release(signed: bytes, keyring: Path, where: str) -> archive.Release:
    """The Release text an InRelease file signs, checked with gpgv against `keyring`, and not
    past its Valid-Until (an index replayed after its time is refused, as apt does)."""
    if not keyring.is_file():
        raise ArchiveError(
            f"no archive keyring at {keyring} (install debian-archive-keyring, or --keyring)"
        )
    with tempfile.NamedTemporaryFile(suffix=".gpg") as signed_file:
        signed_file.write(signed)
        signed_file.flush()
        done = subprocess.run(
            ["gpgv", "--quiet", "--keyring", str(keyring), "--output", "-", signed_file.name],
            capture_output=True,
            check=False,
        )
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ArchiveError(f"{where}: the signature does not verify ({why[-1] if why else '?'})")
    release = archive.release_file(done.stdout.decode("utf-8", errors="replace"))
    if release.valid_until is not None and release.valid_until < datetime.now(UTC):
        raise ArchiveError(f"{where}: expired at {release.valid_until.isoformat()}")
    return release


def _upload_cache(cache_dir: Path, release: str, upload: archive.Upload) -> Path:
    return (
        cache_dir / "uploads" / release / upload.source / f"{quote(upload.version, safe='')}.json"
    )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _records(release: str, source: str, fixes: Iterable[changelog.Fix]) -> list[Record]:
    return [
        Record(
            release, source, f.cve_id, "resolved", f.fixed_version, f.urgency, None, f.description
        )
        for f in fixes
    ]


async def _index(
    fetch: _Fetcher,
    base: str,
    suite: str,
    arch: str,
    keyring: Path,
    cache_dir: Path,
    wanted: frozenset[str] | None,
) -> list[archive.Binary] | None:
    """The binaries one suite lists (None when the archive has no such suite, as a release
    without -updates)."""
    where = f"{base}/dists/{suite}/InRelease"
    with tempfile.TemporaryFile() as spool:
        try:
            await fetch.to_file(where, spool, size=None, limit=MAX_INRELEASE_BYTES)
        except ArchiveUnavailable:
            if suite.endswith("-updates"):
                return None
            raise
        release = verified_release(spool.read(), keyring, where)
    path = archive.PACKAGES_INDEX.format(arch=arch)
    if path not in release.sha256:
        raise ArchiveError(f"{where}: lists no {path} (is {arch} an architecture of {suite}?)")
    sha256, size = release.sha256[path]
    cached = cache_dir / "indexes" / f"{sha256}.xz"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as partial:
            try:
                await fetch.checked(
                    f"{base}/dists/{suite}/{release.url_path(path)}",
                    partial,
                    size=size,
                    sha256=sha256,
                    limit=size,
                )
            except BaseException:
                os.unlink(partial.name)
                raise
        os.replace(partial.name, cached)

    def read() -> list[archive.Binary]:
        # Streamed: the main suite's index is ~50 MB of text, never held whole.
        with lzma.open(cached, "rt", encoding="utf-8", errors="replace") as lines:
            return list(archive.binaries(lines, suite, wanted))

    return await asyncio.to_thread(read)


async def _read_upload(
    fetch: _Fetcher,
    bases: dict[str, str],
    upload: archive.Upload,
    max_download_bytes: int,
) -> str | None:
    """The upload's changelog, from the smallest of its binaries that carries it (following a
    binary whose documentation links to another's); None when none within bounds does."""
    native = "-" not in upload.version.split(":", 1)[-1]
    by_name = {b.package: b for b in upload.binaries}
    queue = [b for b in upload.binaries if b.size <= max_download_bytes]
    tried: set[str] = set()
    while queue and len(tried) < MAX_ATTEMPTS:
        binary = queue.pop(0)
        if binary.package in tried:
            continue
        tried.add(binary.package)
        url = f"{bases[binary.suite]}/{binary.filename}"
        with tempfile.TemporaryFile() as spool:
            await fetch.checked(
                url, spool, size=binary.size, sha256=binary.sha256, limit=max_download_bytes
            )
            found = await asyncio.to_thread(
                debfile.changelog,
                spool,
                binary.package,
                native=native,
                max_bytes=MAX_CHANGELOG_BYTES,
                where=url,
            )
        if isinstance(found, str):
            return found
        if isinstance(found, debfile.Link):
            target = by_name.get(found.package)
            if (
                target is not None
                and target.package not in tried
                and target.size <= max_download_bytes
            ):
                queue.insert(0, target)
    return None


def _from_cache(
    cache_dir: Path, uploads: Iterable[archive.Upload], max_download_bytes: int, built: Built
) -> list[archive.Upload]:
    """Take what earlier builds read of these uploads; the uploads left to read."""
    release = built.release
    pending: list[archive.Upload] = []
    for upload in uploads:
        cached = _upload_cache(cache_dir, release, upload)
        if not cached.is_file():
            pending.append(upload)
            continue
        held = json.loads(cached.read_text())
        if "skipped" in held and held["bound"] < max_download_bytes:
            pending.append(upload)  # skipped under a lower bound: try again
            continue
        if "skipped" in held:
            built.skipped[upload.source] = held["skipped"]
        else:
            fixes = (changelog.Fix(**f) for f in held["fixes"])
            built.records.extend(_records(release, upload.source, fixes))
        built.uploads_cached += 1
    return pending


async def build(
    release: str,
    *,
    mirrors: Mirrors,
    cache_dir: Path,
    arch: str = "amd64",
    sources: frozenset[str] | None = None,
    keyring: Path = DEFAULT_KEYRING,
    max_download_bytes: int = 64 * 1024 * 1024,
    on_plan: Callable[[Plan], None] = lambda plan: None,
    on_upload: Callable[[archive.Upload, str | None], None] = lambda upload, skipped: None,
) -> Built:
    """Build `release`'s records from the archive (only `sources`, when given). `on_plan` hears
    what will be read; `on_upload` hears of each upload read (with why, when it was skipped)."""
    built = Built(release, mirrors)
    bases = {
        **{s.format(release=release): mirrors.main for s in archive.MAIN_SUITES},
        **{s.format(release=release): mirrors.security for s in archive.SECURITY_SUITES},
    }
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits, follow_redirects=True) as client:
        fetch = _Fetcher(client, built)
        found: list[archive.Binary] = []
        for suite, base in bases.items():
            listed = await _index(fetch, base, suite, arch, keyring, cache_dir, sources)
            found.extend(listed or [])
        uploads = archive.newest(found)
        built.sources = len(uploads)
        if sources is not None:
            for missing in sorted(sources - set(uploads)):
                built.skipped[missing] = f"no binary built from it in {release} ({arch})"
        pending = _from_cache(cache_dir, uploads.values(), max_download_bytes, built)
        on_plan(Plan(len(uploads), built.uploads_cached, len(pending)))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def read(upload: archive.Upload) -> None:
            async with gate:
                text = await _read_upload(fetch, bases, upload, max_download_bytes)
            cached = _upload_cache(cache_dir, release, upload)
            if text is None:
                why = "no binary within the bounds carries its changelog"
                built.skipped[upload.source] = why
                held = {"skipped": why, "bound": max_download_bytes}
                _write_atomically(cached, json.dumps(held))
                on_upload(upload, why)
                return
            fixes = changelog.fixes(text)
            _write_atomically(cached, json.dumps({"fixes": [vars_of(f) for f in fixes]}))
            built.records.extend(_records(release, upload.source, fixes))
            built.uploads_read += 1
            on_upload(upload, None)

        tasks = [asyncio.create_task(read(u)) for u in pending]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    built.records.sort(key=lambda r: (r.source, r.cve_id))
    return built


def vars_of(fix: changelog.Fix) -> dict[str, str]:
    """A fix as the cache keeps it."""
    return {
        "cve_id": fix.cve_id,
        "fixed_version": fix.fixed_version,
        "urgency": fix.urgency,
        "description": fix.description,
    }
