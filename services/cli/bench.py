"""`siloflow bench`: throughput, latency, CPU and memory, siloflow against a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from services.bench.deployment import Options
from services.bench.matching_cost import render as render_matching_cost
from services.bench.matching_cost import run as run_matching_cost
from services.bench.results import markdown as to_markdown
from services.bench.results import render
from services.bench.runner import run as run_bench
from services.bench.scale import SMALL_TENANTS, cost_table, run_scale, table_markdown
from services.bench.scale import render as render_scale
from services.cli.common import AppContext, console, pass_app, run, undone_on_signals
from services.core.logs import configure_logging

SCALE_TENANTS = 1000


@click.command()
@click.option(
    "--tenants",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help=f"Tenants provisioned (with --scale, the many side: default {SCALE_TENANTS:,}).",
)
@click.option(
    "--hosts",
    type=click.IntRange(1, 10_000_000),
    default=200,
    show_default=True,
    help="Hosts enrolled through the reference client, spread over the tenants.",
)
@click.option(
    "--reports",
    type=click.IntRange(100),
    default=20_000,
    show_default=True,
    help="Reports of the throughput phase.",
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="How long the fixed-rate (latency) phase publishes.",
)
@click.option(
    "--bindings",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Extra host bindings seeded into the registry in bulk (router scale).",
)
@click.option("--no-baseline", is_flag=True, help="Measure siloflow only.")
@click.option(
    "--warm-up/--no-warm-up",
    default=True,
    show_default=True,
    help="Before the timed phases, one untimed report from every host (each tenant's "
    "connections and consumers in use), for both systems.",
)
@click.option("--worker-processes", type=click.IntRange(0, 64), default=0, show_default=True)
@click.option(
    "--runs",
    type=click.IntRange(1, 99),
    help="siloflow/baseline pairs, interleaved; the ratios are their medians. "
    "[default: 3; with --scale, 1]",
)
@click.option(
    "--scale",
    is_flag=True,
    help="Ten tenants against --tenants (default then 1,000) on servers of the bench's own "
    "(a RabbitMQ node and a PostgreSQL server, started and removed): siloflow only, the "
    "throughput ratio, p99 and tenant sessions against their bound.",
)
@click.option(
    "--matching-cost",
    is_flag=True,
    help="siloflow with the vulnerability catalog matched against siloflow with matching off "
    "(SILOFLOW_CATALOG_MATCHING=false), --runs pairs alternating which runs first; no baseline.",
)
@click.option(
    "--admin-dsn",
    help="A superuser DSN of the PostgreSQL server to run on (it must record commit "
    "timestamps). Default: a server of the bench's own, started and removed by the bench. "
    "Either way the bench bootstraps a namespace of its own and removes it after.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bench.json"),
    show_default=True,
    help="Where the figures are written as JSON.",
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the tables as Markdown here (docs/performance.md takes them).",
)
@pass_app
def bench(
    app: AppContext,
    tenants: int,
    hosts: int,
    reports: int,
    latency_seconds: float,
    bindings: int,
    no_baseline: bool,
    warm_up: bool,
    worker_processes: int,
    runs: int | None,
    scale: bool,
    matching_cost: bool,
    admin_dsn: str | None,
    out: Path,
    markdown: Path | None,
) -> None:
    """Run siloflow's services and a hand-written baseline pipeline as separate processes on the
    same workload (90% heartbeats, 5% system info and hardware, 4% compliance, 1% packages
    snapshots of ~2,000 entries), --runs times interleaved, and print throughput, end-to-end
    latency (to each commit's end), CPU per report of every process (RabbitMQ and PostgreSQL
    included, the bench's own database sessions not), peak memory, and the ratios' medians."""
    context = click.get_current_context()
    if matching_cost and scale:
        raise click.BadParameter("one comparison at a time: --scale or --matching-cost")
    if scale:
        if context.get_parameter_source("tenants") is ParameterSource.DEFAULT:
            tenants = SCALE_TENANTS
        if tenants <= SMALL_TENANTS:
            raise click.BadParameter(
                f"--scale sets {SMALL_TENANTS} tenants against more: give more than "
                f"{SMALL_TENANTS}",
                param_hint="--tenants",
            )
        if admin_dsn is not None:
            raise click.BadParameter(
                "--scale runs on a PostgreSQL server of its own, sized for the tenants",
                param_hint="--admin-dsn",
            )
    elif hosts < tenants:
        raise click.BadParameter("needs at least one host per tenant", param_hint="--hosts")
    options = Options(
        tenants=tenants,
        hosts=hosts,
        reports=reports,
        latency_s=latency_seconds,
        bindings=bindings,
        baseline=not no_baseline,
        warm_up=warm_up,
        admin_dsn=admin_dsn,
        runs=runs or (1 if scale else 3),
        worker_processes=worker_processes,
    )
    # The bench's own provisioning and tear-down would drown the figures at info level.
    configure_logging(app.settings.model_copy(update={"log_level": "warning"}))
    shown = console()

    def progress(line: str) -> None:
        shown.print(f"[dim]{line}[/dim]")

    if scale:
        found = run(undone_on_signals(run_scale(app.settings, options, progress)))
        out.write_text(json.dumps(found, indent=2, default=str))
        tables = [render_scale(found), cost_table(found)]
        if markdown is not None:
            markdown.write_text("\n".join(table_markdown(t) for t in tables))
        for table in tables:
            shown.print(table)
        shown.print(f"figures written to {out}")
        if not found["valid"]:
            raise click.ClickException("a report was lost, doubled or dead-lettered: no score")
        return
    if matching_cost:
        found = run(undone_on_signals(run_matching_cost(app.settings, options, progress)))
        out.write_text(json.dumps(found, indent=2, default=str))
        for line in render_matching_cost(found):
            shown.print(line)
        shown.print(f"figures written to {out}")
        if not found["valid"]:
            raise click.ClickException("a pair lost, doubled or did not match a report: no ratio")
        return
    document = run(undone_on_signals(run_bench(app.settings, options, progress)))
    out.write_text(json.dumps(document, indent=2, default=str))
    if markdown is not None:
        markdown.write_text(to_markdown(document))
    for table in render(document):
        shown.print(table)
    shown.print(f"figures written to {out}")
    if not document["valid"]:
        raise click.ClickException("a report was lost, doubled or dead-lettered: no score")
