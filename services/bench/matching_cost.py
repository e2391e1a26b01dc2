"""`siloflow bench --matching-cost`: what matching packages snapshots against the vulnerability
catalog costs the pipeline. The same deployment (the shipped bookworm catalog in force), the
same workload and phases as `siloflow bench`, run `runs` times in pairs: one side with matching
on (as deployed), the other with `SILOFLOW_CATALOG_MATCHING=false`; each pair alternates which
side runs first, and the second runs its latency phase at the first's rate. A side counts the
hosts it evaluated (`host_findings_state.evaluated_at` in its window), so a side that did not
match (or matched when off) voids the figures, as does a lost, doubled or dead-lettered report.
The throughput ratio is the median of the pairs' ratios; the p99 each side's median p99.

Before the pairs, every host sends its first packages snapshot (matched, its findings written:
a cost each host pays once, reported on its own), so the pairs see the fleet in its steady
state: most snapshots the same packages as the host's last, one in ten with a package upgraded
(`workload.CHANGED_SNAPSHOTS`). After them, the re-evaluation: every host sends the bench's
~2,000-package snapshot, a new revision lands (every advisory's urgency changed, so every host
is matched again), and the sweeper (`siloflow run sweeper`, as deployed) brings every host to it
while live reports keep flowing at the pairs' latency rate: the pass's wall time (from the
import's commit to the last host at the new revision) and the live reports' p99 meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.bench import servers
from services.bench.deployment import check_broker
from services.bench.matching import CATALOG
from services.bench.results import SystemResult
from services.bench.runner import SERVICES, Bench, Live, Options
from services.catalog import store as catalog_store
from services.core.catalog.live import load_index
from services.core.catalog.matcher import Installed
from services.core.settings import Settings

ON, OFF = "matching on", "matching off"
LIVE_S = 60.0  # the live phase beside the re-evaluation publishes at least this long
REEVALUATION_TARGET_S = 30.0  # issue 25: 200 hosts over 10 tenants
# The sweeper as deployed, then with one tenant at a time (the lever for live latency).
SWEEPERS: tuple[dict[str, str], ...] = ({}, {"SILOFLOW_SWEEP_CONCURRENCY": "1"})
ENV = {ON: {"SILOFLOW_CATALOG_MATCHING": "true"}, OFF: {"SILOFLOW_CATALOG_MATCHING": "false"}}
TARGET = 0.95  # issue 25: throughput with matching >= 0.95x of the same run without


async def _hosts(bench: Bench, where: str, value: object) -> int:
    """Hosts of `host_findings_state` matching `where` (one parameter), over every tenant."""
    total = 0
    for database in bench.tenant_dbs:
        conn = await asyncpg.connect(f"{bench.pg}/{database}")
        try:
            total += await conn.fetchval(
                f"select count(*) from host_findings_state where {where}", value
            )
        finally:
            await conn.close()
    return total


async def _at_revision(bench: Bench, revision: int) -> int:
    return await _hosts(bench, "catalog_revision = $1", revision)


async def _until(what: Callable[[], Awaitable[bool]], timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await what():
        if time.monotonic() > deadline:
            raise RuntimeError(why)
        await asyncio.sleep(0.1)


def every_urgency_changed(current: int) -> dict[str, Any]:
    """A revision that touches every source, so every host is matched again: after the shipped
    catalog (an odd revision: the bench imports it first), it with every bookworm record's
    urgency changed; after that, the shipped catalog again."""
    document: dict[str, Any] = json.loads(CATALOG.read_text())
    if current % 2 == 0:
        return document
    for cves in document.values():
        for entry in cves.values():
            for release, record in entry["releases"].items():
                if release == "bookworm":
                    record["urgency"] = "medium" if record.get("urgency") == "high" else "high"
    return document


def services(
    bench: Bench, names: tuple[str, ...], env: dict[str, str] | None = None
) -> AbstractAsyncContextManager[Live]:
    """Start the named services (matching on, as deployed; `env`: settings of them all) until
    the block ends."""
    return bench.live(names, {name: dict(env or {}) for name in names})


async def _snapshots(bench: Bench, live: Live) -> float:
    """A system_info then a packages snapshot from every host, until each host's findings are at
    the revision in force; the seconds it took."""
    started = time.monotonic()
    hosts = bench.options.hosts
    for seed, kind in ((5, "system_info"), (3, "packages")):  # the release first, as agents do
        each = functools.partial(live.publish, warm_up=kind)
        await bench.measure(kind, live.running, each, live.probe, hosts, 0, seed)
    current = await _revision(bench)
    await _until(
        lambda: _all_at(bench, current), 600, "the snapshots' findings were not all evaluated"
    )
    return time.monotonic() - started


async def _all_at(bench: Bench, revision: int) -> bool:
    return await _at_revision(bench, revision) >= bench.options.hosts


async def first_evaluation(bench: Bench, progress: Callable[[str], None]) -> dict[str, Any]:
    """Each host's first packages snapshot, matched and its findings written: a cost each host
    pays once, measured apart from the pairs (which then see the fleet in its steady state)."""
    hosts = bench.options.hosts
    progress(f"first evaluation: a ~2,000-package snapshot from each of {hosts:,} hosts")
    async with services(bench, SERVICES) as live:
        seconds = await _snapshots(bench, live)
    return {"hosts": hosts, "seconds": seconds, "ms_per_host": 1000 * seconds / hosts}


async def reevaluation(
    bench: Bench, rate: float, progress: Callable[[str], None], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """A new revision re-evaluated across every tenant by the sweeper while live reports flow
    (`env`: the services' settings, e.g. the sweeper's concurrency and duty)."""
    hosts = bench.options.hosts
    async with services(bench, (*SERVICES, "sweeper"), env) as live:
        progress(f"re-evaluation: a ~2,000-package snapshot from each of {hosts:,} hosts")
        current = await _revision(bench)
        await _snapshots(bench, live)
        count = int(rate * max(bench.options.latency_s, LIVE_S))
        progress(f"re-evaluation: a new revision, {count:,} live reports at {rate:,.0f}/s")
        publishing = asyncio.create_task(
            bench.measure("live", live.running, live.publish, live.probe, count, rate, 4)
        )
        path = bench.options.workdir / "next-revision.json"
        path.write_text(json.dumps(every_urgency_changed(current)))
        importing = time.monotonic()
        with path.open("rb") as stream:
            done = await catalog_store.import_feed(
                bench.settings, stream, source="bench", releases={"bookworm"}
            )
        started = time.monotonic()
        revision = done.revision
        assert revision is not None
        at_once = await _at_revision(bench, revision)
        await _until(lambda: _all_at(bench, revision), 900, "the re-evaluation stalled")
        seconds = time.monotonic() - started
        during = await publishing
    wrong = await findings_not_as_evaluated(bench)
    return {
        "hosts": hosts,
        "tenants": bench.options.tenants,
        "seconds": seconds,
        "live_rate": rate,
        "live_p99_s": during.percentile(0.99),
        "live_exact": during.exact,
        "live_seconds": during.seconds,
        "settings": env or {},
        "import_s": started - importing,
        "hosts_at_revision_when_imported": at_once,
        "hosts_with_other_findings": wrong,
    }


async def findings_not_as_evaluated(bench: Bench) -> int:
    """Hosts whose open findings (package, CVE, urgency) are not what matching their stored
    packages, for their release, against the revision in force gives: 0, or the pass is not
    to be believed."""
    index = await load_index(bench.settings)
    assert index is not None
    wrong = 0
    for database in bench.tenant_dbs:
        conn = await asyncpg.connect(f"{bench.pg}/{database}")
        try:
            stored: dict[Any, list[Installed]] = {}
            for r in await conn.fetch(
                "select host_id, name, version, coalesce(source, name) as source, "
                "coalesce(source_version, version) as source_version from host_packages"
            ):
                stored.setdefault(r["host_id"], []).append(
                    Installed(r["name"], r["version"], r["source"], r["source_version"])
                )
            releases = {
                r["host_id"]: r["release"]
                for r in await conn.fetch("select host_id, release from host_findings_state")
            }
            for host, installed in stored.items():
                expected = {
                    (i.package, a.cve_id, a.urgency)
                    for i, a in index.match(releases.get(host), installed).findings
                }
                rows = await conn.fetch(
                    "select package, cve_id, urgency from findings "
                    "where host_id = $1 and resolved_at is null",
                    host,
                )
                wrong += {(r["package"], r["cve_id"], r["urgency"]) for r in rows} != expected
        finally:
            await conn.close()
    return wrong


async def _revision(bench: Bench) -> int:
    conn = await asyncpg.connect(f"{bench.pg}/{bench.settings.shared_database}")
    try:
        revision: int = await conn.fetchval("select max(id) from shared_catalog_revisions")
    finally:
        await conn.close()
    return revision


async def evaluated_since(bench: Bench, since: datetime) -> int:
    """Hosts whose findings were evaluated since `since`, over every tenant database."""
    return await _hosts(bench, "evaluated_at >= $1", since)


def side(result: SystemResult, evaluated: int) -> dict[str, Any]:
    """One side's figures."""
    return {
        "throughput": result.peak.throughput,
        "cpu_ms_per_report": result.peak.cpu_per_1000()["total"],
        "p99_s": result.steady.percentile(0.99),
        "exact": result.peak.exact and result.steady.exact and result.dead_letters == 0,
        "hosts_evaluated": evaluated,
        "run": result.as_json(),
    }


def summarise(namespace: str, options: Options, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pairs, their validity, and the medians (with every run's value and the range)."""
    for pair in pairs:
        pair["valid"] = (
            pair[ON]["exact"]
            and pair[OFF]["exact"]
            and pair[ON]["hosts_evaluated"] > 0
            and pair[OFF]["hosts_evaluated"] == 0
        )
    document: dict[str, Any] = {
        "namespace": namespace,
        "options": {k: str(v) for k, v in dataclasses.asdict(options).items()},
        "pairs": pairs,
        "valid": all(p["valid"] for p in pairs),
        "target": TARGET,
    }
    if not document["valid"]:
        return document  # no ratio from a run that lost, doubled or did not match
    throughput = [p[ON]["throughput"] / p[OFF]["throughput"] for p in pairs]
    cpu = [p[ON]["cpu_ms_per_report"] / p[OFF]["cpu_ms_per_report"] for p in pairs]
    p99 = {s: statistics.median(p[s]["p99_s"] or 0.0 for p in pairs) for s in (ON, OFF)}
    document["ratios"] = {
        "throughput": {"median": statistics.median(throughput), "runs": throughput},
        "cpu_per_report": {"median": statistics.median(cpu), "runs": cpu},
    }
    document["p99_s_median"] = p99
    document["met"] = document["ratios"]["throughput"]["median"] >= TARGET
    return document


def render(document: dict[str, Any]) -> list[str]:
    """The figures as lines."""
    pairs = document["pairs"]
    lines = [
        f"matching on against off, n = {len(pairs)} pairs; first in each pair: "
        + ", ".join(p["order"][0].split()[1] for p in pairs)
    ]
    for index, pair in enumerate(pairs, 1):
        lines.append(
            f"pair {index}: "
            + "; ".join(
                f"{s}: {pair[s]['throughput']:,.0f}/s, {pair[s]['cpu_ms_per_report']:.2f} ms "
                f"CPU/report, p99 {1000 * (pair[s]['p99_s'] or 0):,.0f} ms, "
                f"{pair[s]['hosts_evaluated']:,} hosts evaluated"
                for s in (ON, OFF)
            )
            + ("" if pair["valid"] else "  (INVALID: lost, doubled, dead-lettered or unmatched)")
        )
    if not document["valid"]:
        lines.append("no ratios: a pair is invalid (see above)")
        return lines
    for name, label in (("throughput", "throughput"), ("cpu_per_report", "CPU per report")):
        ratio = document["ratios"][name]
        runs = ", ".join(f"{r:.3f}" for r in ratio["runs"])
        lines.append(
            f"{label}, on / off: {ratio['median']:.3f} (runs {runs}; "
            f"range {min(ratio['runs']):.3f}-{max(ratio['runs']):.3f})"
        )
    p99 = document["p99_s_median"]
    lines.append(
        f"p99 at half load, median of runs: on {1000 * p99[ON]:,.0f} ms, "
        f"off {1000 * p99[OFF]:,.0f} ms"
    )
    verdict = "met" if document["met"] else "missed"
    lines.append(f"target: throughput on / off >= {TARGET}: {verdict}")
    first = document["first_evaluation"]
    lines.append(
        f"first evaluation (before the pairs, once a host): {first['hosts']:,} hosts' first "
        f"snapshots committed and their findings written in {first['seconds']:.1f} s "
        f"({first['ms_per_host']:,.0f} ms a host)"
    )
    for again in document["reevaluation"]:
        verdict = "met" if again["seconds"] <= REEVALUATION_TARGET_S else "missed"
        settings = ", ".join(f"{k}={v}" for k, v in again["settings"].items()) or "as deployed"
        lines.append(
            f"re-evaluation ({settings}) after a revision that changes every advisory: "
            f"{again['hosts']:,} hosts over {again['tenants']} tenants in "
            f"{again['seconds']:.1f} s (target <= {REEVALUATION_TARGET_S:.0f} s: {verdict}); "
            f"live reports meanwhile at {again['live_rate']:,.0f}/s: p99 "
            f"{1000 * (again['live_p99_s'] or 0):,.0f} ms (matching on, no re-evaluation: "
            f"{1000 * p99[ON]:,.0f} ms)"
            + ("" if again["live_exact"] else "  (INVALID: a live report was lost or doubled)")
            + (
                ""
                if again["hosts_with_other_findings"] == 0
                else f"  (INVALID: {again['hosts_with_other_findings']} hosts' findings wrong)"
            )
        )
    return lines


async def run(base: Settings, options: Options, progress: Callable[[str], None]) -> dict[str, Any]:
    """The pairs, on a deployment and PostgreSQL server of the bench's own (removed after)."""
    await check_broker(base, options.tenants)
    async with servers.postgres(options, progress) as admin_dsn:
        options = dataclasses.replace(options, admin_dsn=admin_dsn, baseline=False)
        bench = Bench(base, options)
        progress(f"namespace {bench.namespace}; logs in {options.workdir}")
        pairs: list[dict[str, Any]] = []
        try:
            await bench.set_up(progress)
            first = await first_evaluation(bench, progress)
            for index in range(options.runs):
                order = (ON, OFF) if index % 2 == 0 else (OFF, ON)
                pair: dict[str, Any] = {"order": list(order)}
                rate: float | None = None
                for name in order:
                    progress(f"pair {index + 1} of {options.runs}: {name}")
                    since = datetime.now(UTC)
                    result = await bench.run_siloflow(progress, rate, system=name, env=ENV[name])
                    rate = bench.latency_rate
                    pair[name] = side(result, await evaluated_since(bench, since))
                pairs.append(pair)
            rate = statistics.median(p[ON]["run"]["steady"]["rate"] for p in pairs)
            again = [await reevaluation(bench, rate, progress, env) for env in SWEEPERS]
        finally:
            progress("removing the bench's databases, roles and vhost")
            await bench.tear_down()
    document = summarise(bench.namespace, options, pairs)
    document["first_evaluation"] = first
    document["reevaluation"] = again
    document["valid"] = document["valid"] and all(
        a["live_exact"] and a["hosts_with_other_findings"] == 0 for a in again
    )
    return document
