"""`siloflow catalog build`: the catalog built from a Debian archive, for sites the security
tracker cannot reach.

Against an archive served here over loopback (signed with a key made for the test, checked
with the real gpgv): each upload read once, documentation links followed, native packages
read, what cannot be trusted refused by name, what is over the bound skipped and kept. Against
Debian's real archive (reachable here and in CI): a handful of real source packages give
exactly the records of the shared bookworm catalog, which was made the same way."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.catalog import build
from services.core.catalog import versions
from services.core.errors import ArchiveError
from tests.debs import deb
from tests.integration.pipeline import Env, fetch
from tests.support import invoke_cli, needs

ROOT = Path(__file__).parents[2]
SHARED = json.loads(
    (ROOT / "services" / "catalog" / "data" / "debian12-security-fixes.json").read_text()
)


def changelog(source: str, *uploads: tuple[str, str]) -> bytes:
    """A changelog of (version, item) uploads, newest first."""
    return "".join(
        f"{source} ({version}) bookworm; urgency=high\n\n  * {item}\n\n"
        " -- A Maintainer <a@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n\n"
        for version, item in uploads
    ).encode()


@dataclass
class Archive:
    """An archive on loopback: main (bookworm) and security (bookworm-security) suites, each a
    signed InRelease over a Packages.xz of the .debs put in it."""

    root: Path
    url: str
    keyring: Path
    gnupg: Path
    debs: dict[str, list[tuple[str, str, str, bytes]]] = field(default_factory=dict)
    valid_for: timedelta = timedelta(days=7)

    def add(self, suite: str, package: str, version: str, source: str, data: bytes) -> None:
        self.debs.setdefault(suite, []).append((package, version, source, data))

    def base(self, suite: str) -> str:
        return "security" if suite.endswith("-security") else "main"

    def publish(self, signer: Path | None = None) -> None:
        for suite, debs in self.debs.items():
            top = self.root / self.base(suite)
            stanzas = []
            for package, version, source, data in debs:
                filename = f"pool/main/{package}_{version}_amd64.deb"
                (top / filename).parent.mkdir(parents=True, exist_ok=True)
                (top / filename).write_bytes(data)
                stanzas.append(
                    f"Package: {package}\nSource: {source}\nVersion: {version}\n"
                    f"Filename: {filename}\nSize: {len(data)}\n"
                    f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
                )
            index = lzma.compress("\n".join(stanzas).encode())
            dists = top / "dists" / suite
            (dists / "main" / "binary-amd64").mkdir(parents=True, exist_ok=True)
            by_hash = self.base(suite) == "security"
            if by_hash:
                # As the real security archive: the index under its digest, and the plain path
                # already holding the next publication's, which the signed Release does not name.
                digest = hashlib.sha256(index).hexdigest()
                (dists / "main" / "binary-amd64" / "by-hash" / "SHA256").mkdir(
                    parents=True, exist_ok=True
                )
                (dists / "main" / "binary-amd64" / "by-hash" / "SHA256" / digest).write_bytes(index)
                index_at_plain_path = lzma.compress(b"Package: next\n")
            else:
                index_at_plain_path = index
            (dists / "main" / "binary-amd64" / "Packages.xz").write_bytes(index_at_plain_path)
            until = datetime.now(UTC) + self.valid_for
            release = (
                f"Origin: Test\nCodename: {suite}\nValid-Until: {format_datetime(until)}\n"
                f"Acquire-By-Hash: {'yes' if by_hash else 'no'}\n"
                f"SHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} "
                "main/binary-amd64/Packages.xz\n"
            )
            (dists / "Release").write_text(release)
            subprocess.run(
                [
                    *("gpg", "--homedir", str(signer or self.gnupg), "--batch", "--yes"),
                    *("--clearsign", "-o", str(dists / "InRelease"), str(dists / "Release")),
                ],
                check=True,
                capture_output=True,
            )

    @property
    def mirrors(self) -> build.Mirrors:
        return build.Mirrors(f"{self.url}/main", f"{self.url}/security")


def new_key(home: Path) -> None:
    home.mkdir(mode=0o700)
    subprocess.run(
        [
            *("gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"),
            *("--passphrase", "", "--quick-gen-key", "siloflow test <t@example.org>"),
            *("ed25519", "sign", "1d"),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def local_archive() -> Iterator[Archive]:
    needs("gpg", "the catalog builder's tests against a signed archive on loopback")
    # gpg-agent's socket path must stay short: a directory of its own under /tmp.
    root = Path(tempfile.mkdtemp(prefix="sf-archive-"))
    gnupg = root / "gnupg"
    new_key(gnupg)
    keyring = root / "keyring.gpg"
    keyring.write_bytes(
        subprocess.run(
            ["gpg", "--homedir", str(gnupg), "--export"], check=True, capture_output=True
        ).stdout
    )
    served = root / "www"
    served.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Archive(served, f"http://127.0.0.1:{server.server_address[1]}", keyring, gnupg)
    finally:
        server.shutdown()
        server.server_close()
        for home in root.glob("*gnupg*"):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def fleet_archive(archive: Archive) -> None:
    """tar (one binary), gnutls28 (its smallest binary links its documentation to another),
    apt (native: changelog.gz), openssl (a newer upload in security), meta (no changelog)."""
    tar = changelog("tar", ("1.34-2", "Fix CVE-2023-39804"), ("1.34-1", "Fix CVE-2022-48303"))
    archive.add("bookworm", "tar", "1.34-2", "tar", deb("tar", changelog=tar).getvalue())
    gnutls = changelog("gnutls28", ("3.7.9-2+deb12u4", "Fix a DoS [CVE-2024-12243]"))
    archive.add(
        "bookworm",
        "libgnutlsxx30",
        "3.7.9-2+deb12u4",
        "gnutls28",
        deb("libgnutlsxx30", changelog=None, link="libgnutls30").getvalue(),
    )
    big = deb("libgnutls30", changelog=gnutls).getvalue() + b"\0" * 10_000
    archive.add("bookworm", "libgnutls30", "3.7.9-2+deb12u4", "gnutls28", big)
    apt = changelog("apt", ("2.6.1", "Fix CVE-2020-27350"))
    archive.add(
        "bookworm", "apt", "2.6.1", "apt", deb("apt", changelog=apt, name="changelog.gz").getvalue()
    )
    old = changelog("openssl", ("3.0.15-1~deb12u1", "Fix CVE-2024-0001"))
    new = changelog(
        "openssl", ("3.0.17-1~deb12u2", "Fix CVE-2025-0002"), ("3.0.15-1~deb12u1", "CVE-2024-0001")
    )
    archive.add(
        "bookworm",
        "libssl3",
        "3.0.15-1~deb12u1",
        "openssl",
        deb("libssl3", changelog=old).getvalue(),
    )
    archive.add(
        "bookworm-security",
        "libssl3",
        "3.0.17-1~deb12u2",
        "openssl",
        deb("libssl3", changelog=new).getvalue(),
    )
    archive.add("bookworm", "meta", "1.0-1", "meta", deb("meta", changelog=None).getvalue())
    archive.publish()


async def run_build(archive: Archive, cache: Path, **options: Any) -> build.Built:
    return await build.build(
        "bookworm", mirrors=archive.mirrors, cache_dir=cache, keyring=archive.keyring, **options
    )


def keyed(built: build.Built) -> dict[tuple[str, str], tuple[str | None, str]]:
    return {(r.source, r.cve_id): (r.fixed_version, r.urgency) for r in built.records}


async def test_each_upload_is_read_once_links_followed_and_native_packages_read(
    local_archive: Archive, tmp_path: Path
) -> None:
    fleet_archive(local_archive)
    first = await run_build(local_archive, tmp_path)
    assert keyed(first) == {
        ("tar", "CVE-2022-48303"): ("1.34-1", "high"),
        ("tar", "CVE-2023-39804"): ("1.34-2", "high"),
        ("gnutls28", "CVE-2024-12243"): ("3.7.9-2+deb12u4", "high"),
        ("apt", "CVE-2020-27350"): ("2.6.1", "high"),
        ("openssl", "CVE-2024-0001"): ("3.0.15-1~deb12u1", "high"),
        ("openssl", "CVE-2025-0002"): ("3.0.17-1~deb12u2", "high"),
    }
    assert first.skipped == {"meta": "no binary within the bounds carries its changelog"}
    assert (first.sources, first.uploads_read, first.uploads_cached) == (5, 4, 0)

    again = await run_build(local_archive, tmp_path)
    assert keyed(again) == keyed(first) and again.skipped == first.skipped
    assert (again.uploads_read, again.uploads_cached) == (0, 5)
    signed = sum(p.stat().st_size for p in local_archive.root.rglob("InRelease"))
    assert again.downloaded_bytes == signed  # the signed indexes, nothing else


async def test_an_upload_over_the_bound_is_skipped_then_read_under_a_larger_one(
    local_archive: Archive, tmp_path: Path
) -> None:
    fleet_archive(local_archive)
    tight = await run_build(local_archive, tmp_path, max_download_bytes=8_000)
    assert "gnutls28" in tight.skipped and not any(r.source == "gnutls28" for r in tight.records)
    wider = await run_build(local_archive, tmp_path, max_download_bytes=1_000_000)
    assert "gnutls28" not in wider.skipped
    assert keyed(wider)[("gnutls28", "CVE-2024-12243")] == ("3.7.9-2+deb12u4", "high")


def tamper_deb(archive: Archive) -> None:
    target = next((archive.root / "main" / "pool").rglob("tar_*.deb"))
    target.write_bytes(target.read_bytes()[:-1] + b"!")


def tamper_index(archive: Archive) -> None:
    index = archive.root / "main" / "dists" / "bookworm" / "main" / "binary-amd64" / "Packages.xz"
    index.write_bytes(lzma.compress(b"Package: evil\n"))


def sign_with_another_key(archive: Archive) -> None:
    other = archive.root.parent / "other-gnupg"
    new_key(other)
    archive.publish(signer=other)


def expire(archive: Archive) -> None:
    archive.valid_for = timedelta(days=-1)
    archive.publish()


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (tamper_deb, r"tar_1\.34-2_amd64\.deb: its SHA-256 is not the one the signed index gives"),
        (tamper_index, r"Packages\.xz: its SHA-256 is not the one the signed index gives"),
        (sign_with_another_key, r"bookworm/InRelease: the signature does not verify"),
        (expire, r"bookworm/InRelease: expired at"),
    ],
)
async def test_what_cannot_be_trusted_is_refused_by_name(
    local_archive: Archive, tmp_path: Path, attack: Callable[[Archive], None], message: str
) -> None:
    fleet_archive(local_archive)
    attack(local_archive)
    with pytest.raises(ArchiveError, match=message):
        await run_build(local_archive, tmp_path)


async def test_a_build_replaces_its_release_and_keeps_what_it_could_not_read(
    env: Env, local_archive: Archive, tmp_path: Path
) -> None:
    fleet_archive(local_archive)
    feed = {
        "meta": {"CVE-2019-0001": {"releases": {"bookworm": {"status": "open"}}}},
        "gone": {"CVE-2019-0002": {"releases": {"bookworm": {"status": "open"}}}},
        "tar": {"CVE-2019-0003": {"releases": {"bookworm": {"status": "open"}}}},
    }
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(feed))
    imported = await invoke_cli(["catalog", "import", str(path), "--json"], env.settings)
    assert imported.exit_code == 0, imported.output
    args = ["catalog", "build", "--release", "bookworm", "--mirror", local_archive.mirrors.main]
    args += ["--security-mirror", local_archive.mirrors.security]
    args += ["--keyring", str(local_archive.keyring), "--cache-dir", str(tmp_path / "cache")]
    done = await invoke_cli([*args, "--json"], env.settings)
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    assert (document["added"], document["removed"]) == (6, 2)  # gone and tar's CVE-2019-0003
    assert document["skipped"] == {"meta": "no binary within the bounds carries its changelog"}
    rows = await fetch(
        env.settings.shared_database, "select source, cve_id, status from shared_advisories"
    )
    held = {(r["source"], r["cve_id"]) for r in rows}
    assert ("meta", "CVE-2019-0001") in held  # could not be read: kept as it was
    assert not held & {("gone", "CVE-2019-0002"), ("tar", "CVE-2019-0003")}
    assert len(held) == 7

    again = await invoke_cli(args, env.settings)
    assert again.exit_code == 0, again.output
    assert "0 uploads read" in again.output and "no change" in again.output

    refused = await invoke_cli([*args, "--source", "Not A Name"], env.settings)
    assert refused.exit_code == 2 and "not a Debian source package name" in refused.output


# Small source packages of the snapshot whose records in the shared catalog the build must give
# exactly (the shared file was built from the same archive, the same way, on 2026-12-06).
REAL_SOURCES = ("tar", "zlib", "xz-utils", "gzip", "expat", "curl")


# Over the network: three signed indexes (~10 MB) and six .debs, whatever the link's pace. A
# timeout inside the in-process CLI would leave its thread running with the runner's streams in
# place, and every test after it would fail, so it gets time enough.
@pytest.mark.timeout(600)
async def test_the_real_archive_gives_the_shared_catalogs_records(env: Env, tmp_path: Path) -> None:
    args = ["catalog", "build", "--release", "bookworm", "--cache-dir", str(tmp_path), "--json"]
    for source in REAL_SOURCES:
        args += ["--source", source]
    done = await invoke_cli(args, env.settings)
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    assert document["skipped"] == {} and document["uploads_read"] == len(REAL_SOURCES)
    rows = await fetch(
        env.settings.shared_database,
        "select source, cve_id, status, fixed_version, urgency, description "
        "from shared_advisories where release = 'bookworm' and source = any($1::text[])",
        list(REAL_SOURCES),
    )
    built = {(r["source"], r["cve_id"]): r for r in rows}
    for source in REAL_SOURCES:
        for cve_id, entry in SHARED[source].items():
            record = entry["releases"]["bookworm"]
            row = built.pop((source, cve_id))
            assert (row["status"], row["fixed_version"], row["urgency"]) == (
                record["status"],
                record["fixed_version"],
                record["urgency"],
            ), (source, cve_id)
            assert row["description"] == entry["description"], (source, cve_id)
    # Anything more can only come from uploads after the shared file was made.
    for (source, cve_id), row in built.items():
        made_from = next(iter(SHARED[source].values()))["releases"]["bookworm"]["repositories"]
        assert versions.compare(row["fixed_version"], made_from["bookworm"]) > 0, (source, cve_id)

    again = await invoke_cli(args, env.settings)
    assert again.exit_code == 0, again.output
    repeated = json.loads(again.output)
    assert (repeated["uploads_read"], repeated["uploads_cached"]) == (0, len(REAL_SOURCES))
    assert repeated["revision"] is None and repeated["current"] == document["revision"]
