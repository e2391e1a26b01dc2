"""`siloflow bench --scale`: ten tenants and a thousand on the same servers, in one command.

It starts what a thousand tenants need and a fresh machine does not have: a RabbitMQ node of its
own with the file descriptors a thousand quorum queues hold (`deploy/local/rabbit-cluster.sh`),
a PostgreSQL server of its own with a connection budget to match (`deploy/local/pg-instance.sh`).
On those two servers it runs siloflow (no baseline) with few tenants, then with many, each a
deployment of its own set up, measured as `siloflow bench` measures, and removed before the next
(so neither pays for the other's idle queues and databases); `--runs` repeats the pair,
interleaved. The figure is `scale.ratio`: the many-tenant throughput over the few-tenant one
(the median over the pairs), printed with each side's p99 at half its own maximum and the tenant
database sessions seen against their bound. Everything it started is stopped and removed."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from collections.abc import Callable
from typing import Any

from rich.table import Table

from services.bench import servers
from services.bench.deployment import Options, check_broker
from services.bench.results import summarise
from services.bench.runner import Bench
from services.core.settings import Settings

SMALL_TENANTS = 10
IDLE_S = 15.0  # the idle window of each side, every tenant warm
TARGET_RATIO = 0.75  # issue 19: a thousand tenants at three quarters of ten
TARGET_P99_S = 0.250


def sides(options: Options) -> list[Options]:
    """The deployments of a pair: few tenants with `--hosts` hosts, then `--tenants` (the many)
    with two hosts each at least; between them, for the cost curve, a tenth of the many when
    that lies between. Each with an idle window after its warm-up (the idle cost)."""
    counts = [SMALL_TENANTS]
    if SMALL_TENANTS < options.tenants // 10 < options.tenants:
        counts.append(options.tenants // 10)
    counts.append(options.tenants)
    return [
        dataclasses.replace(
            options,
            tenants=tenants,
            hosts=max(options.hosts, 2 * tenants),
            baseline=False,
            runs=1,
            max_tenant_engines=engines_for(tenants),
            idle_s=IDLE_S,
        )
        for tenants in counts
    ]


def engines_for(tenants: int) -> int:
    """Tenant pools a worker process may keep: one for each tenant it may own (the shards
    split tenants between processes unevenly, hence the quarter spare), so a thin tenant's
    connection is kept rather than opened for each of its reports."""
    processes = os.cpu_count() or 1
    return max(32, math.ceil(tenants / processes * 1.25))


async def run_scale(
    base: Settings, options: Options, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The whole scale bench; returns its figures (`scale` on top, every run below it)."""
    pairs: list[dict[int, dict[str, Any]]] = []
    async with servers.rabbitmq(progress) as broker:
        node = base.model_copy(
            update={
                "amqp_url": broker["SILOFLOW_AMQP_URL"],
                "management_url": broker["SILOFLOW_MANAGEMENT_URL"],
            }
        )
        await check_broker(node, options.tenants)
        async with servers.postgres(options, progress) as admin_dsn:
            for index in range(options.runs):
                pair: dict[int, dict[str, Any]] = {}
                for side in sides(dataclasses.replace(options, admin_dsn=admin_dsn)):
                    progress(f"pair {index + 1} of {options.runs}: {side.tenants:,} tenants")
                    bench = Bench(node, side)
                    try:
                        await bench.set_up(progress)
                        result = await bench.run_siloflow(progress)
                    finally:
                        progress(f"removing the {side.tenants:,}-tenant deployment")
                        await bench.tear_down()
                    pair[side.tenants] = summarise(bench.namespace, side, [(result, None)])
                pairs.append(pair)
    return document(pairs, options.tenants)


def _side(run: dict[str, Any]) -> dict[str, Any]:
    """One side's figures, from its one-run bench document."""
    silo = run["siloflow"]
    idle = silo.get("idle") or {}
    return {
        "throughput": silo["peak"]["throughput"],
        "p99_s": silo["steady"]["p99_s"],
        "latency_rate": silo["steady"]["rate"],
        "cpu_ms_per_report": dict(silo["peak"]["cpu_s_per_1000"]),
        "tenant_sessions_peak": max(
            silo["peak"]["peak_tenant_connections"], silo["steady"]["peak_tenant_connections"]
        ),
        "tenant_session_bound": silo.get("tenant_connection_bound"),
        "peak_rss_mib": silo["peak_rss_mb"],
        "provision_s_per_tenant": silo.get("provision_s_per_tenant"),
        "idle_cores": idle.get("cores", {}),
        "idle_pss_mib": idle.get("pss_mib", {}),
        "broker_mem_used_mib": idle.get("broker_mem_used_mib"),
        "exactly_once": run["valid"],
    }


def document(pairs: list[dict[int, dict[str, Any]]], many: int) -> dict[str, Any]:
    """The scale figures over the pairs: the ratio's median, the median pair's sides (each
    tenant count's figures, the cost curve's points) and every pair's documents."""
    ratios = [
        pair[many]["siloflow"]["peak"]["throughput"]
        / pair[SMALL_TENANTS]["siloflow"]["peak"]["throughput"]
        for pair in pairs
    ]
    ratio = statistics.median(ratios)
    median_pair = pairs[sorted(range(len(ratios)), key=ratios.__getitem__)[(len(ratios) - 1) // 2]]
    points = {tenants: _side(run) for tenants, run in sorted(median_pair.items())}
    valid = all(run["valid"] for pair in pairs for run in pair.values())
    within = all(
        p["tenant_sessions_peak"] <= (p["tenant_session_bound"] or 0) for p in points.values()
    )
    few, lots = points[SMALL_TENANTS], points[many]
    return {
        "scale": {
            "tenants": sorted(points),
            f"ratio_{many}_vs_{SMALL_TENANTS}": ratio,
            "ratio": ratio,
            "ratios": ratios,
            **{str(tenants): point for tenants, point in points.items()},
            "per_tenant": per_tenant(few, lots, many - SMALL_TENANTS),
            "targets": {
                "ratio_at_least_0_75": ratio >= TARGET_RATIO,
                "p99_under_250ms": all(
                    (p["p99_s"] if p["p99_s"] is not None else 1e9) < TARGET_P99_S
                    for p in (few, lots)
                ),
                "tenant_sessions_within_bound": within,
                "exactly_once_in_every_run": valid,
            },
        },
        "valid": valid,
        "pairs": [{str(k): v for k, v in pair.items()} for pair in pairs],
    }


def per_tenant(few: dict[str, Any], lots: dict[str, Any], added: int) -> dict[str, float]:
    """What one more tenant costs, idle and warm: the difference between the many-tenant side
    and the ten-tenant side, over the tenants added (broker memory in MiB, cores in
    thousandths, PSS in MiB by process group)."""
    cost: dict[str, float] = {}
    if few["broker_mem_used_mib"] is not None and lots["broker_mem_used_mib"] is not None:
        cost["broker_memory_mib"] = (
            lots["broker_mem_used_mib"] - few["broker_mem_used_mib"]
        ) / added
    for group in sorted(set(few["idle_cores"]) & set(lots["idle_cores"])):
        delta = lots["idle_cores"][group] - few["idle_cores"][group]
        cost[f"idle_millicores_{group}"] = 1000 * delta / added
    for group in sorted(set(few["idle_pss_mib"]) & set(lots["idle_pss_mib"])):
        cost[f"pss_mib_{group}"] = (
            lots["idle_pss_mib"][group] - few["idle_pss_mib"][group]
        ) / added
    if lots["provision_s_per_tenant"] is not None:
        cost["provision_s"] = lots["provision_s_per_tenant"]
    return cost


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def render(scale_document: dict[str, Any]) -> Table:
    """The scale table for the terminal: each side's figures, the many against the few."""
    scale = scale_document["scale"]
    counts = [str(t) for t in scale["tenants"]]
    few, many = counts[0], counts[-1]
    table = Table(
        title=f"siloflow bench --scale: {many} tenants against {few} "
        f"(median of {len(scale['ratios'])} pair(s))"
    )
    table.add_column("figure")
    for count in counts:
        table.add_column(f"{count} tenants", justify="right")
    table.add_column(f"{many} / {few}", justify="right")
    points = [scale[c] for c in counts]

    def row(label: str, cells: list[str], ratio: str = "") -> None:
        table.add_row(label, *cells, ratio)

    row(
        "committed reports/s",
        [f"{p['throughput']:,.0f}" for p in points],
        f"{scale['ratio']:.2f}",
    )
    row(
        "p99 at half the maximum",
        [f"{_ms(p['p99_s'])} at {p['latency_rate']:,.0f}/s" for p in points],
    )
    groups = sorted({g for p in points for g in p["cpu_ms_per_report"]})
    for group in groups:
        values = [p["cpu_ms_per_report"].get(group) for p in points]
        first, last = values[0], values[-1]
        row(
            f"CPU ms per report: {group}",
            ["-" if v is None else f"{v:.2f}" for v in values],
            f"{last / first:.1f}x" if first and last else "",
        )
    row(
        "tenant database sessions: peak / bound",
        [f"{p['tenant_sessions_peak']} / {p['tenant_session_bound']}" for p in points],
    )
    row("exactly once", ["yes" if p["exactly_once"] else "NO" for p in points])
    return table


def cost_table(scale_document: dict[str, Any]) -> Table:
    """The cost curve: idle cost and memory at each tenant count, and per tenant added."""
    scale = scale_document["scale"]
    counts = [str(t) for t in scale["tenants"]]
    points = [scale[c] for c in counts]
    table = Table(title="the cost of tenants: idle (every tenant warm, nothing published)")
    table.add_column("figure")
    for count in counts:
        table.add_column(f"{count} tenants", justify="right")
    table.add_column(f"per tenant ({counts[0]} to {counts[-1]})", justify="right")
    per = scale["per_tenant"]

    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} MiB"

    table.add_row(
        "broker memory (node's own count)",
        *(mib(p["broker_mem_used_mib"]) for p in points),
        f"{per['broker_memory_mib']:.3f} MiB" if "broker_memory_mib" in per else "-",
    )
    for group in sorted({g for p in points for g in p["idle_cores"]}):
        key = f"idle_millicores_{group}"
        table.add_row(
            f"idle CPU: {group}",
            *(f"{p['idle_cores'].get(group, 0) * 1000:.0f} millicores" for p in points),
            f"{per[key]:.3f} millicores" if key in per else "-",
        )
    for group in sorted({g for p in points for g in p["idle_pss_mib"]}):
        key = f"pss_mib_{group}"
        table.add_row(
            f"memory (PSS): {group}",
            *(mib(p["idle_pss_mib"].get(group)) for p in points),
            f"{per[key]:.3f} MiB" if key in per else "-",
        )
    table.add_row(
        "provisioning, per tenant (tenant create)",
        *(
            "-" if p["provision_s_per_tenant"] is None else f"{p['provision_s_per_tenant']:.2f} s"
            for p in points
        ),
        "",
    )
    return table


def table_markdown(table: Table) -> str:
    """A rich table as Markdown (docs/scaling.md takes it)."""
    header = [str(column.header) for column in table.columns]
    cells = [[str(c) for c in column.cells] for column in table.columns]
    lines = [f"{table.title}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells, strict=True)]
    return "\n".join(lines) + "\n"
