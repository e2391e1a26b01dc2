"""The benchmark's workload: which host sends which kind of report, in what order. Pure and
seeded, so siloflow and the baseline get the very same sequence."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from services.agent.simulate import MIX, data_for, debian_packages

# The fleet's mix (`simulate.MIX`), with packages snapshots of about 2,000 entries.
PACKAGES_PER_SNAPSHOT = 2000
# A packages snapshot that differs from the host's last one (an upgrade since): one in ten. The
# rest are the same packages again, as an agent reporting daily mostly sends.
CHANGED_SNAPSHOTS = 0.1


@dataclass(frozen=True)
class Planned:
    """One planned report: which host sends it, of which kind."""

    host_index: int
    kind: str


def plan(hosts: int, count: int, seed: int) -> list[Planned]:
    """`count` reports from `hosts` hosts, kinds drawn from `MIX`."""
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    drawn = rng.choices(kinds, weights, k=count)
    return [Planned(rng.randrange(hosts), kind) for kind in drawn]


def warm_up(hosts: int, kind: str = "system_info") -> list[Planned]:
    """One report of `kind` from every host, in host order. The bench's warm-up is a system_info,
    as an agent starts: each tenant's queue, consumer, login and database connection has been
    used once before anything is timed, and each host's Debian release is known (its packages
    snapshots are matched)."""
    return [Planned(index, kind) for index in range(hosts)]


def packages_snapshot() -> dict[str, Any]:
    """The real Debian 12 snapshot (733 packages), grown to ~2,000 entries the way a busier
    server's would be: each real package joined by its -dev, -doc, ... siblings, in order."""
    real = debian_packages()
    entries = list(real["packages"])
    suffixes = ("-dev", "-doc", "-dbgsym")
    known = {p["name"] for p in entries}
    extra = [
        {**p, "name": p["name"] + suffix}
        for suffix in suffixes
        for p in real["packages"]
        if p["name"] + suffix not in known
    ]
    entries += extra[: max(PACKAGES_PER_SNAPSHOT - len(entries), 0)]
    return {"manager": real["manager"], "packages": entries}


def upgraded(packages: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The snapshot with one package (and its source) upgraded: a newer version in dpkg's order,
    which may resolve findings."""
    entries = list(packages["packages"])
    index = rng.randrange(len(entries))
    entry = entries[index]
    version = entry.get("source_version", entry["version"])
    entries[index] = {
        **entry,
        "version": entry["version"] + "+up1",
        "source_version": version + "+up1",
    }
    return {**packages, "packages": entries}


def data(
    kind: str, host_index: int, rng: random.Random, packages: dict[str, Any]
) -> dict[str, Any]:
    """The report's data: the simulator's, with the larger packages snapshot (one in ten of them
    upgraded since the host's last)."""
    if kind == "packages" and rng.random() < CHANGED_SNAPSHOTS:
        packages = upgraded(packages, rng)
    return data_for(kind, rng, host_index, packages)
