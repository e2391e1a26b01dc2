"""The reference agent's package collector: dpkg's lines parsed (pure), and this Debian host's
own packages read for real and valid as a packages report."""

from __future__ import annotations

import shutil

import pytest

from schemas.reports import PackagesData
from services.agent.collect import dpkg_packages, parse_dpkg


def test_dpkg_lines_become_entries_with_their_source_only_where_it_differs() -> None:
    output = "\n".join(
        [
            "ii \tbash\t5.2.15-2+b8\tamd64\tbash\t5.2.15-2",
            "ii \tlibssl3\t3.0.15-1~deb12u1\tamd64\topenssl\t3.0.15-1~deb12u1",
            "ii \tadduser\t3.134\tall\tadduser\t3.134",
            # removed, its configuration left behind: not installed
            "rc \told-thing\t1.0\tamd64\told-thing\t1.0",
            "garbage",
        ]
    )
    assert parse_dpkg(output) == [
        {"name": "bash", "version": "5.2.15-2+b8", "arch": "amd64", "source_version": "5.2.15-2"},
        {"name": "libssl3", "version": "3.0.15-1~deb12u1", "arch": "amd64", "source": "openssl"},
        {"name": "adduser", "version": "3.134", "arch": "all"},
    ]


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian host")
def test_this_hosts_packages_are_a_valid_report() -> None:
    data = dpkg_packages()
    assert len(data["packages"]) > 50
    PackagesData.model_validate(data)
    assert any("source" in p for p in data["packages"])  # e.g. libc6 from glibc
