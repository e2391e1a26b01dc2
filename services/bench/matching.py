"""Matching alone, in the worker's process (`python -m services.bench.matching`, or `make
bench-matching`): a ~2,000-package snapshot (the bench's: the real Debian 12 snapshot grown with
-dev/-doc siblings) matched against the whole shipped bookworm catalog, as the worker does it for
each packages snapshot it commits. Prints the index's build time and the match's p50 and p99,
warm (the fleet's versions already parsed: the usual case, hosts share versions) and cold (every
version parsed anew), interleaved rounds; CPU time of this process only (no I/O is involved)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources

from services.bench.workload import packages_snapshot
from services.core.catalog import versions
from services.core.catalog.live import settle_heap
from services.core.catalog.matcher import Advisory, CatalogIndex, installed_of

CATALOG = resources.files("services.catalog").joinpath("data/debian12-security-fixes.json")


def catalog_index() -> tuple[CatalogIndex, float]:
    """The shipped catalog's bookworm records as an index, and how long building it took (ms)."""
    document = json.loads(CATALOG.read_text())
    records = [
        ("bookworm", source, Advisory(cve, r["status"], r.get("fixed_version"), r["urgency"]))
        for source, cves in document.items()
        for cve, entry in cves.items()
        for release, r in entry["releases"].items()
        if release == "bookworm"
    ]
    started = time.process_time()
    index = CatalogIndex(1, None, records)
    return index, (time.process_time() - started) * 1000


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of the values, by the nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400, help="matches per kind (>= 100)")
    args = parser.parse_args()
    if args.rounds < 100:
        parser.error("--rounds must be at least 100 (a p99 needs them)")
    index, build_ms = catalog_index()
    snapshot = installed_of(packages_snapshot()["packages"])
    settle_heap()  # as the worker does once it holds a new revision
    found = len(index.match("bookworm", snapshot).findings)
    times: dict[str, list[float]] = {"warm": [], "cold": []}
    for _ in range(args.rounds):
        for kind in ("warm", "cold"):  # interleaved: both see the machine the same way
            if kind == "cold":
                versions.key.cache_clear()
            started = time.process_time()
            index.match("bookworm", snapshot)
            times[kind].append((time.process_time() - started) * 1000)
    print(f"catalog: {index.size:,} bookworm advisories; index built in {build_ms:.1f} ms")
    print(f"snapshot: {len(snapshot):,} packages -> {found:,} findings")
    for kind, values in times.items():
        print(
            f"match ({kind}): p50 {statistics.median(values):.2f} ms, "
            f"p99 {percentile(values, 0.99):.2f} ms, max {max(values):.2f} ms "
            f"over {len(values)} rounds"
        )


if __name__ == "__main__":
    main()
