"""Debian version order against dpkg itself (`dpkg --compare-versions`, the oracle): a table of
the tricky cases, every pair of versions of one source in the real snapshot, and generated
versions. Skipped only where dpkg is not installed (every Debian machine has it)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.catalog.versions import compare, key, valid

DPKG = shutil.which("dpkg")
SNAPSHOT = Path(__file__).parents[2] / "services" / "agent" / "data" / "debian12-packages-src.json"


def dpkg_compare(a: str, b: str) -> int:
    assert DPKG is not None
    for answer, op in ((-1, "lt"), (0, "eq"), (1, "gt")):
        if subprocess.run([DPKG, "--compare-versions", a, op, b], check=False).returncode == 0:
            return answer
    raise AssertionError(f"dpkg answered none of lt, eq, gt for {a!r} {b!r}")


needs_dpkg = pytest.mark.skipif(DPKG is None, reason="dpkg is not installed here")

TRICKY = [
    ("1.0~rc1", "1.0"),  # a tilde sorts before the end
    ("1.0", "1.0-0"),  # no revision is revision 0
    ("1.0", "1.00"),  # numbers, not strings
    ("1:0.1", "2.0"),  # the epoch first
    ("1.0a", "1.0+"),  # letters before other characters
    ("1.0", "1.0."),
    ("5.2.15-2", "5.2.15-2+b8"),  # a binNMU is newer than its source
    ("248+deb12u1", "248"),
    ("2.36-9+deb12u4", "2.36-9+deb12u10"),
    ("1.2.3~~", "1.2.3~"),
    ("0:1.0", "1.0"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("10", "9"),
    ("1.0-a", "1.0-b"),
    ("1.0~", "1.0~~a"),
]


@needs_dpkg
@pytest.mark.parametrize(("a", "b"), TRICKY)
def test_tricky_pairs_are_ordered_as_dpkg_orders_them(a: str, b: str) -> None:
    assert compare(a, b) == dpkg_compare(a, b)
    assert compare(b, a) == dpkg_compare(b, a)


@needs_dpkg
def test_the_real_snapshots_versions_are_ordered_as_dpkg_orders_them() -> None:
    snapshot = json.loads(SNAPSHOT.read_text())
    versions = sorted(
        {p["version"] for p in snapshot["packages"]}
        | {p["source_version"] for p in snapshot["packages"]}
    )
    # 200 pairs spread over all of them (every pair is too many dpkg processes).
    pairs = list(itertools.combinations(versions, 2))[:: max(1, len(versions) ** 2 // 400)][:200]
    assert len(pairs) >= 150
    for a, b in pairs:
        assert compare(a, b) == dpkg_compare(a, b), (a, b)


versions = st.builds(
    lambda epoch, upstream, revision: f"{epoch}{upstream}{revision}",
    st.sampled_from(["", "1:", "2:"]),
    st.from_regex(r"[0-9][0-9a-z.+~]{0,8}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"-[0-9a-z.+~]{1,6}", fullmatch=True)),
)


@needs_dpkg
@settings(max_examples=150, deadline=None)
@given(a=versions, b=versions)
def test_generated_versions_are_ordered_as_dpkg_orders_them(a: str, b: str) -> None:
    assert compare(a, b) == dpkg_compare(a, b), (a, b)


@pytest.mark.parametrize(
    "bad", ["", "abc", "1.0 beta", "1:", ":1.0", "a1.0", "1.0-", "1.0_1", "1.0\n"]
)
def test_what_dpkg_refuses_is_refused(bad: str) -> None:
    assert not valid(bad)
    with pytest.raises(ValueError):
        key(bad)
