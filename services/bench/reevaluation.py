"""Re-evaluation alone (`python -m services.bench.reevaluation`, or `make bench-reevaluation`): the
sweeper's catch-up of every host's findings after a new catalog revision, on scratch tenant
databases of the local server. Each tenant's hosts first commit a system_info and the bench's
~2,000-package snapshot through the workers' own commit (matched against the shipped bookworm
catalog); then two revisions land in turn:

- a full one (every advisory's urgency changed: every host is matched again), and
- a typical daily one (a few source packages gain an advisory: only their hosts are matched again,
  the others recorded as current),

each applied to every tenant as the sweeper applies it (`catch_up`, one session per tenant, four
tenants at a time). Prints the wall time of each pass, hosts matched and recorded, milliseconds per
host matched, and what that predicts at 1,000 tenants of 1,000 hosts. Removes its databases."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg

from services.bench import scratch
from services.bench.workload import packages_snapshot
from services.core.catalog.findings import catch_up
from services.core.catalog.live import settle_heap
from services.core.catalog.matcher import Advisory, CatalogIndex
from services.workers import store
from services.workers.handlers import Report

CATALOG = resources.files("services.catalog").joinpath("data/debian12-security-fixes.json")
CONCURRENCY = 4  # the sweeper's default (SILOFLOW_SWEEP_CONCURRENCY)
# What a daily feed update typically touches: a few sources gain an advisory.
DAILY_SOURCES = ("openssl", "glibc", "curl")

Records = dict[tuple[str, str, str], Advisory]


def shipped() -> Records:
    """The shipped catalog's bookworm records, by (release, source, CVE)."""
    document = json.loads(CATALOG.read_text())
    return {
        ("bookworm", source, cve): Advisory(cve, r["status"], r.get("fixed_version"), r["urgency"])
        for source, cves in document.items()
        for cve, entry in cves.items()
        for release, r in entry["releases"].items()
        if release == "bookworm"
    }


def index_of(revision: int, records: Records) -> CatalogIndex:
    """The records as an index of that revision."""
    return CatalogIndex(
        revision, None, ((release, source, a) for (release, source, _), a in records.items())
    )


def difference(before: Records, after: Records) -> set[tuple[str, str]]:
    """The (release, source) pairs whose advisories differ (what the shared tables record)."""
    return {
        (release, source)
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
        for release, source, _ in [key]
    }


def reports_for(host: uuid.UUID, packages: dict[str, Any], at: datetime) -> list[Report]:
    """A host's system_info (Debian 12) and packages snapshot, as the workers receive them."""
    info = {
        "hostname": "bench",
        "fqdn": "bench.example",
        "os_name": "Debian GNU/Linux",
        "os_version": "12 (bookworm)",
        "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
        "ipv4": [],
        "ipv6": [],
    }
    return [
        Report(uuid.uuid4(), host, "system_info", at, None, info),
        Report(uuid.uuid4(), host, "packages", at + timedelta(seconds=1), None, packages),
    ]


async def apply(
    dsns: list[str], index: CatalogIndex, changed: set[tuple[str, str]]
) -> dict[str, float]:
    """One pass over every tenant, as the sweeper makes it; its wall time and counts."""
    limit = asyncio.Semaphore(CONCURRENCY)
    totals = {"matched": 0, "recorded": 0}

    async def changes(_since: int, _upto: int) -> set[tuple[str, str]]:
        return changed

    async def one(dsn: str) -> None:
        async with limit:
            conn = await asyncpg.connect(dsn)
            try:
                done = await catch_up(conn, index, changes)
            finally:
                await conn.close()
            totals["matched"] += done.evaluated
            totals["recorded"] += done.moved_on

    started = time.perf_counter()
    await asyncio.gather(*(one(dsn) for dsn in dsns))
    return {**totals, "seconds": time.perf_counter() - started}


async def run(admin_dsn: str, tenants: int, hosts: int) -> None:
    """Set up, apply the two revisions in turn, print the figures, clean up."""
    prefix = f"benchreeval{secrets.token_hex(3)}"
    names = [f"{prefix}_{i}" for i in range(tenants)]
    admin = await asyncpg.connect(admin_dsn)
    try:
        dsns = [await scratch.tenant_database(admin, admin_dsn, name) for name in names]
        first = shipped()
        full = {k: Advisory(a.cve_id, a.status, a.fixed_version, "high") for k, a in first.items()}
        daily = dict(full)
        for n, source in enumerate(DAILY_SOURCES):
            daily[("bookworm", source, f"CVE-2099-{10000 + n}")] = Advisory(
                f"CVE-2099-{10000 + n}", "open", None, "medium"
            )
        v1, v2, v3 = index_of(1, first), index_of(2, full), index_of(3, daily)
        settle_heap()
        packages = packages_snapshot()
        at = datetime.now(UTC) - timedelta(hours=1)
        started = time.perf_counter()
        for dsn in dsns:
            conn = await asyncpg.connect(dsn)
            try:
                for _ in range(hosts):
                    await store.commit_batch(conn, reports_for(uuid.uuid4(), packages, at), v1)
            finally:
                await conn.close()
        committed_s = time.perf_counter() - started
        total = tenants * hosts
        print(
            f"{tenants} tenants x {hosts} hosts, {len(packages['packages']):,} packages each: "
            f"first snapshots committed and matched in {committed_s:.1f} s "
            f"({1000 * committed_s / total:.1f} ms a host)"
        )
        for label, index, changed in (
            ("full (every advisory changed)", v2, difference(first, full)),
            (f"daily ({', '.join(DAILY_SOURCES)} gain one each)", v3, difference(full, daily)),
        ):
            done = await apply(dsns, index, changed)
            per_host = 1000 * done["seconds"] / max(done["matched"], 1)
            print(
                f"revision {label}: {done['seconds']:.1f} s; {done['matched']:.0f} hosts matched "
                f"again ({per_host:.0f} ms each, {CONCURRENCY} tenants at a time), "
                f"{done['recorded']:.0f} recorded as current"
            )
            share = done["matched"] / total
            predicted_h = per_host / 1000 * share * 1_000_000 / 3600
            print(
                f"  at 1,000 tenants x 1,000 hosts, the same revision: ~{predicted_h:.1f} h on "
                f"this machine (matched hosts x ms each; the pass is CPU-bound, so more sweeper "
                f"concurrency needs more cores)"
            )
    finally:
        for name in names:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


def main() -> None:
    """Parse the arguments and run, refusing bad ones with a message."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a superuser DSN (scratch databases are created there and dropped after)",
    )
    parser.add_argument("--tenants", type=int, default=10, help="tenant databases (1-100)")
    parser.add_argument("--hosts", type=int, default=20, help="hosts per tenant (1-10000)")
    args = parser.parse_args()
    if not 1 <= args.tenants <= 100:
        parser.error("--tenants must be from 1 to 100")
    if not 1 <= args.hosts <= 10_000:
        parser.error("--hosts must be from 1 to 10,000")
    try:
        asyncio.run(run(args.admin_dsn, args.tenants, args.hosts))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        parser.exit(1, f"bench-reevaluation: cannot use --admin-dsn {args.admin_dsn!r}: {exc}\n")


if __name__ == "__main__":
    main()
