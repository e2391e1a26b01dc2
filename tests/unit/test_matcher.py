"""Matching a host's packages against the catalog (pure): the rule in a table, the release from
system_info, and the whole real snapshot against the whole real catalog compared with an
independent answer computed with `dpkg --compare-versions` alone (no product code)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from services.core.catalog.matcher import (
    Advisory,
    CatalogIndex,
    Installed,
    installed_of,
    release_of,
)

ROOT = Path(__file__).parents[2]
SNAPSHOT = json.loads((ROOT / "services/agent/data/debian12-packages-src.json").read_text())
CATALOG = json.loads((ROOT / "services/catalog/data/debian12-security-fixes.json").read_text())


def index(*records: tuple[str, str, str, str | None]) -> CatalogIndex:
    return CatalogIndex(
        1,
        None,
        (
            ("bookworm", source, Advisory(cve, status, fixed, "low"))
            for source, cve, status, fixed in records
        ),
    )


BASH = Installed("bash", "5.2.15-2+b8", "bash", "5.2.15-2")


@pytest.mark.parametrize(
    ("record", "affected"),
    [
        (("bash", "CVE-2024-0001", "resolved", "5.2.15-3"), True),  # fixed later: affected
        (("bash", "CVE-2024-0002", "resolved", "5.2.15-2"), False),  # fixed in this very version
        (("bash", "CVE-2024-0003", "resolved", "5.2.15-1"), False),  # fixed before
        (("bash", "CVE-2024-0004", "resolved", "0"), False),  # never affected
        (("bash", "CVE-2024-0005", "open", None), True),
        (("bash", "CVE-2024-0006", "undetermined", None), True),
        # by the source version, not the binary's: 5.2.15-2 < 5.2.15-2+b1 < 5.2.15-2+b8
        (("bash", "CVE-2024-0007", "resolved", "5.2.15-2+b1"), True),
        (("readline", "CVE-2024-0008", "resolved", "9.9"), False),  # another source
        (("bash", "CVE-2024-0009", "resolved", "5.2.15-2~deb12u1"), False),  # ~ sorts before
    ],
)
def test_the_rule(record: tuple[str, str, str, str | None], affected: bool) -> None:
    found = index(record).match("bookworm", [BASH]).findings
    assert bool(found) is affected
    if affected:
        [(installed, advisory)] = found
        assert (installed.package, installed.source, advisory.cve_id) == ("bash", "bash", record[1])


def test_another_release_an_unknown_one_and_an_unparsable_version_give_nothing() -> None:
    catalog = index(("bash", "CVE-2024-0001", "open", None))
    assert catalog.match("bullseye", [BASH]).findings == []
    assert catalog.match(None, [BASH]).findings == []
    broken = Installed("bash", "1.0", "bash", "not a version")
    assert catalog.match("bookworm", [broken]).unparsed == 1


@pytest.mark.parametrize(
    ("os_name", "os_version", "release"),
    [
        ("Debian GNU/Linux", "12 (bookworm)", "bookworm"),
        ("Debian GNU/Linux", "12", "bookworm"),
        ("Debian GNU/Linux", "12.5", "bookworm"),
        ("Debian GNU/Linux", "11 (bullseye)", "bullseye"),
        ("Debian GNU/Linux", "trixie/sid", None),
        ("Ubuntu", "22.04 (jammy)", None),
        (None, None, None),
        ("Debian GNU/Linux", "99", None),
    ],
)
def test_the_release_comes_from_system_info(
    os_name: str | None, os_version: str | None, release: str | None
) -> None:
    assert release_of(os_name, os_version) == release


def test_an_entry_without_source_fields_is_its_own_source() -> None:
    [entry] = installed_of([{"name": "bash", "version": "5.2.15-2", "arch": "amd64"}])
    assert (entry.source, entry.source_version) == ("bash", "5.2.15-2")


def catalog_index() -> CatalogIndex:
    records = [
        ("bookworm", source, Advisory(cve, r["status"], r.get("fixed_version"), r["urgency"]))
        for source, cves in CATALOG.items()
        for cve, entry in cves.items()
        for release, r in entry["releases"].items()
        if release == "bookworm"
    ]
    return CatalogIndex(1, None, records)


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is not installed here")
def test_the_real_snapshot_against_the_real_catalog_equals_dpkgs_own_answer() -> None:
    installed = installed_of(SNAPSHOT["packages"])
    found = catalog_index().match("bookworm", installed).findings
    product = {(i.package, a.cve_id) for i, a in found}

    # Independently: for every installed binary, every record of its source, dpkg decides.
    answers: dict[tuple[str, str], bool] = {}

    def lower(installed_version: str, fixed: str) -> bool:
        if (installed_version, fixed) not in answers:
            answers[(installed_version, fixed)] = (
                subprocess.run(
                    ["dpkg", "--compare-versions", installed_version, "lt", fixed], check=False
                ).returncode
                == 0
            )
        return answers[(installed_version, fixed)]

    independent = set()
    below_or_never = 0
    for entry in SNAPSHOT["packages"]:
        source = entry.get("source") or entry["name"]
        source_version = entry.get("source_version") or entry["version"]
        for cve, record in CATALOG.get(source, {}).items():
            r = record["releases"].get("bookworm")
            if r is None:
                continue
            if r["status"] in ("open", "undetermined") or (
                r["fixed_version"] != "0" and lower(source_version, r["fixed_version"])
            ):
                independent.add((entry["name"], cve))
            else:
                below_or_never += 1
    assert product == independent
    assert below_or_never > 1000  # the snapshot really holds the cases that must yield nothing
    assert len(product) > 0
