"""Advisories read from a Debian changelog: which upload fixed which CVE, at what urgency, in
what words. The cases are shapes real changelogs of bookworm's packages have."""

from __future__ import annotations

import pytest

from services.catalog.changelog import MAX_DESCRIPTION_CHARS, entries, fixes


def changelog(*uploads: tuple[str, str, str]) -> str:
    """A changelog of (version, urgency, body) uploads, newest first."""
    return "\n".join(
        f"pkg ({version}) bookworm; urgency={urgency}\n\n{body}\n\n"
        f" -- A Maintainer <a@example.org>  Sat, 20 Jan 2024 10:27:07 +0100\n"
        for version, urgency, body in uploads
    )


def test_each_cve_is_fixed_in_the_earliest_upload_that_names_it() -> None:
    text = changelog(
        ("1.2-3", "high", "  * Regression fix for CVE-2023-0001"),
        ("1.2-2", "medium", "  * Fix a heap overflow (CVE-2023-0001)\n  * Fix CVE-2023-0002"),
        ("1.2-1", "low", "  * New upstream release"),
    )
    found = {f.cve_id: f for f in fixes(text)}
    assert set(found) == {"CVE-2023-0001", "CVE-2023-0002"}
    assert found["CVE-2023-0001"].fixed_version == "1.2-2"
    assert found["CVE-2023-0001"].urgency == "medium"
    assert found["CVE-2023-0001"].description == "Fix a heap overflow (CVE-2023-0001)"


def test_the_earliest_is_by_dpkg_order_not_by_position() -> None:
    # A changelog that lists an older version below a newer one is normal; an out-of-order one
    # (a backport merged in) must still give the lowest version.
    text = changelog(
        ("2:1.0-1", "medium", "  * CVE-2022-1111 again"),
        ("1:9.0-1", "medium", "  * Fix CVE-2022-1111"),
        ("1:9.5-1", "medium", "  * Mention CVE-2022-1111"),
    )
    assert fixes(text)[0].fixed_version == "1:9.0-1"


def test_an_entry_above_the_newest_version_lands_with_the_next_upload_not_above_it() -> None:
    # libxml2 2.9.14+dfsg-1.3 (unstable) was then rebuilt for bookworm as 1.3~deb12u1: the fix
    # reached bookworm with ~deb12u1, which dpkg orders below 1.3.
    text = changelog(
        ("2.9.14+dfsg-1.3~deb12u2", "medium", "  * Fix CVE-2024-0002"),
        ("2.9.14+dfsg-1.3~deb12u1", "medium", "  * Rebuild for bookworm"),
        ("2.9.14+dfsg-1.3", "high", "  * Reset nsNr (CVE-2022-2309)"),
        ("2.9.14+dfsg-1.2", "medium", "  * Fix CVE-2022-0001"),
    )
    found = {f.cve_id: f.fixed_version for f in fixes(text)}
    assert found == {
        "CVE-2024-0002": "2.9.14+dfsg-1.3~deb12u2",
        "CVE-2022-2309": "2.9.14+dfsg-1.3~deb12u1",
        "CVE-2022-0001": "2.9.14+dfsg-1.2",
    }


@pytest.mark.parametrize(
    ("body", "cve", "description"),
    [
        # continuation lines join the bullet
        (
            "  * Fix handling of extended header prefixes (CVE-2023-39804)\n    (Closes: #1058079)",
            "CVE-2023-39804",
            "Fix handling of extended header prefixes (CVE-2023-39804) (Closes: #1058079)",
        ),
        # a nested bullet is an item of its own; every item naming the CVE, joined by " / "
        (
            "  * Import patch for CVE-2024-11053\n    - When asked to use a .netrc file\n"
            "  * d/patches:\n    - url.patch: required for CVE-2024-11053.",
            "CVE-2024-11053",
            "Import patch for CVE-2024-11053 / url.patch: required for CVE-2024-11053.",
        ),
        # `[ Name ]` heads a maintainer's changes; `[CVE-...]` on a continuation line is text
        (
            "  [ Someone ]\n  * libgnutls: Fix a DoS\n"
            "    [GNUTLS-SA-2025, CVSS: medium] [CVE-2024-12243]",
            "CVE-2024-12243",
            "libgnutls: Fix a DoS [GNUTLS-SA-2025, CVSS: medium] [CVE-2024-12243]",
        ),
        # a blank line ends an item; text outside bullets is one item a line
        (
            "    + Prevent CREATE SCHEMA tricks\n      (CVE-2023-2454)\n\n"
            "      Within a CREATE SCHEMA command, objects\n      message. (CVE-2022-41862)",
            "CVE-2022-41862",
            "message. (CVE-2022-41862)",
        ),
        # spaces inside a line are kept as written
        (
            "  * Fix nullptr deref.  CVE-2018-14404; Closes: #901817",
            "CVE-2018-14404",
            "Fix nullptr deref.  CVE-2018-14404; Closes: #901817",
        ),
    ],
)
def test_a_cve_is_described_by_the_items_that_name_it(
    body: str, cve: str, description: str
) -> None:
    found = {f.cve_id: f.description for f in fixes(changelog(("1.0-1", "medium", body)))}
    assert found[cve] == description


def test_a_description_is_cut_and_the_cves_past_the_cut_still_count() -> None:
    long = "x" * (MAX_DESCRIPTION_CHARS + 50)
    found = fixes(changelog(("1.0-1", "medium", f"  * {long} CVE-2020-8231")))
    assert [f.cve_id for f in found] == ["CVE-2020-8231"]
    assert len(found[0].description) == MAX_DESCRIPTION_CHARS


@pytest.mark.parametrize(
    ("header", "urgency"),
    [
        ("pkg (1.0-1) unstable; urgency=HIGH", "high"),
        ("pkg (1.0-1) unstable; urgency=medium, binary-only=yes", "medium"),
        ("pkg (1.0-1) unstable;", "medium"),
        ("pkg (1.0-1) wheezy-security; urgency=emergency", "emergency"),
    ],
)
def test_the_urgency_is_read_from_the_header(header: str, urgency: str) -> None:
    text = f"{header}\n\n  * Fix CVE-2013-2003\n\n -- A <a@b.c>  Tue, 14 May 2013 00:38:17 +0200\n"
    assert [(e.version, e.urgency) for e in entries(text)] == [("1.0-1", urgency)]


def test_lines_outside_entries_and_versions_dpkg_refuses_are_passed_over() -> None:
    text = (
        "Local variables:\nmode: debian-changelog\n"
        + changelog(("1.0-2", "medium", "  * Fix CVE-2021-0002"))
        + changelog(("not a version!", "medium", "  * Fix CVE-2021-0003"))
        + "Old free-form history naming CVE-2001-0001\n"
    )
    assert [f.cve_id for f in fixes(text)] == ["CVE-2021-0002"]


def test_an_empty_changelog_has_no_fixes() -> None:
    assert fixes("") == []
