"""The Debian archive as the catalog builder reads it (no network): index stanzas, a Release
file's checksums and validity, the newest upload of each source across suites, apt's mirrors,
and a changelog out of a `.deb` (`tests/debs.py` builds them as dpkg-deb lays them out)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.catalog import archive, debfile
from services.catalog.build import apt_mirrors
from services.core.errors import ArchiveError
from tests.debs import deb

PACKAGES = """\
Package: libssl3
Source: openssl
Version: 3.0.17-1~deb12u2
Filename: pool/main/o/openssl/libssl3_3.0.17-1~deb12u2_amd64.deb
Size: 2019000
SHA256: aa

Package: openssl
Version: 3.0.17-1~deb12u2
Description: a tool
 with a second line
Filename: pool/main/o/openssl/openssl_3.0.17-1~deb12u2_amd64.deb
Size: 1400000
SHA256: bb

Package: bash
Source: bash (5.2.15-2)
Version: 5.2.15-2+b8
Filename: pool/main/b/bash/bash_5.2.15-2+b8_amd64.deb
Size: 1500000
SHA256: cc
"""
SECURITY = """\
Package: libssl3
Source: openssl
Version: 3.0.17-1~deb12u3
Filename: pool/updates/main/o/openssl/libssl3_3.0.17-1~deb12u3_amd64.deb
Size: 2019100
SHA256: dd
"""


def test_stanzas_keep_continuation_lines_and_refuse_what_is_no_field() -> None:
    first = next(archive.stanzas(PACKAGES.split("\n\n")[1]))
    assert first["Description"] == "a tool\nwith a second line"
    with pytest.raises(ArchiveError, match="no field"):
        list(archive.stanzas("Package: x\nnot a field\n"))


def test_a_binary_names_its_source_and_the_source_version_when_they_differ() -> None:
    found = {b.package: b for b in archive.binaries(PACKAGES, "bookworm")}
    assert (found["libssl3"].source, found["libssl3"].source_version) == (
        "openssl",
        "3.0.17-1~deb12u2",
    )
    assert (found["bash"].source, found["bash"].source_version) == ("bash", "5.2.15-2")
    assert (found["openssl"].source, found["openssl"].size) == ("openssl", 1400000)
    only = list(archive.binaries(PACKAGES, "bookworm", frozenset({"bash"})))
    assert [b.package for b in only] == ["bash"]


@pytest.mark.parametrize(
    ("stanza", "message"),
    [
        ("Package: x\nVersion: 1.0\nSize: 1\nSHA256: a\n", "no Filename"),
        ("Package: x\nVersion: 1.0\nFilename: ../../etc/passwd\nSize: 1\nSHA256: a\n", "outside"),
        ("Package: x\nVersion: !!\nFilename: pool/x.deb\nSize: 1\nSHA256: a\n", "valid"),
    ],
)
def test_a_stanza_the_archive_would_not_publish_is_refused(stanza: str, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        list(archive.binaries(stanza, "bookworm"))


def test_the_newest_upload_wins_across_suites_with_its_binaries_smallest_first() -> None:
    found = [
        *archive.binaries(PACKAGES, "bookworm"),
        *archive.binaries(SECURITY, "bookworm-security"),
    ]
    uploads = archive.newest(found)
    assert uploads["openssl"].version == "3.0.17-1~deb12u3"
    assert [b.package for b in uploads["openssl"].binaries] == ["libssl3"]
    assert uploads["bash"].version == "5.2.15-2"
    older = archive.newest(archive.binaries(PACKAGES, "bookworm"))["openssl"]
    assert [b.package for b in older.binaries] == ["openssl", "libssl3"]


def test_a_release_file_gives_checksums_and_validity() -> None:
    text = (
        "Origin: Debian\nCodename: bookworm-security\n"
        "Valid-Until: Fri, 11 Dec 2026 03:54:28 UTC\nSHA256:\n"
        " 945c 309460 main/binary-amd64/Packages.xz\n 826d 8705816 main/source/Sources\n"
    )
    release = archive.release_file(text)
    assert release.suite == "bookworm-security"
    assert release.valid_until == datetime(2026, 12, 11, 3, 54, 28, tzinfo=UTC)
    assert release.sha256["main/binary-amd64/Packages.xz"] == ("945c", 309460)
    assert release.url_path("main/binary-amd64/Packages.xz") == "main/binary-amd64/Packages.xz"


def test_an_archive_that_serves_by_hash_is_read_by_digest() -> None:
    release = archive.release_file(
        "Codename: bookworm-security\nAcquire-By-Hash: yes\nSHA256:\n"
        " 945c 309460 main/binary-amd64/Packages.xz\n 826d 10 Release.gz\n"
    )
    assert release.url_path("main/binary-amd64/Packages.xz") == (
        "main/binary-amd64/by-hash/SHA256/945c"
    )
    assert release.url_path("Release.gz") == "by-hash/SHA256/826d"


def test_apt_mirrors_come_from_its_sources_in_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# a comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    found = apt_mirrors("bookworm", tmp_path)
    assert (found.main, found.security) == (
        "http://mirror.example/debian",
        "http://security.example/debian-security",
    )
    nothing = apt_mirrors("trixie", tmp_path)
    assert nothing.main == "http://deb.debian.org/debian"


TEXT = (
    b"pkg (1.0-1) bookworm; urgency=medium\n\n  * Fix CVE-2024-0001\n\n"
    b" -- A <a@b.c>  Mon, 1 Jan 2024 00:00:00 +0000\n"
)


def test_the_changelog_is_read_out_of_a_deb() -> None:
    got = debfile.changelog(
        deb("pkg", changelog=TEXT), "pkg", native=False, max_bytes=1 << 20, where="x"
    )
    assert got == TEXT.decode()


def test_a_native_package_keeps_it_as_changelog_gz() -> None:
    native = deb("apt", changelog=TEXT, name="changelog.gz")
    assert (
        debfile.changelog(native, "apt", native=True, max_bytes=1 << 20, where="x") == TEXT.decode()
    )


def test_documentation_linked_to_another_binary_names_it() -> None:
    linked = deb("libgnutlsxx30", changelog=None, link="libgnutls30")
    got = debfile.changelog(linked, "libgnutlsxx30", native=False, max_bytes=1 << 20, where="x")
    assert got == debfile.Link("libgnutls30")


def test_a_package_without_a_changelog_has_none() -> None:
    assert (
        debfile.changelog(
            deb("meta", changelog=None), "meta", native=False, max_bytes=1 << 20, where="x"
        )
        is None
    )


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (io.BytesIO(b"<html>not found</html>"), "not a Debian package"),
        (deb("pkg", changelog=TEXT, data_member=b"data.tar.zst"), "does not know"),
        (deb("pkg", changelog=TEXT * 100), "over 1,000 bytes"),
    ],
)
def test_what_cannot_be_read_within_bounds_is_refused_by_name(
    stream: io.BytesIO, message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        debfile.changelog(stream, "pkg", native=False, max_bytes=1000, where="x")
