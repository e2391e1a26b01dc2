"""`siloflow status [--json] [--watch]`."""

from __future__ import annotations

import asyncio
import contextlib

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table

from services.cli.common import AppContext, console, json_option, pass_app, print_json, run
from services.ops.status import QueueStatus, Status, collect


def _wait(q: QueueStatus) -> str:
    """Dead letters: how long the oldest has waited for an operator. Work queues: how long the
    oldest has yet to wait at the current drain rate ("stuck": nothing drains it)."""
    if q.role == "dlq":
        return "-" if q.oldest_age_s is None else f"oldest {q.oldest_age_s:.0f}s"
    wait = q.wait_estimate_s
    return "stuck" if wait is None else f"~{wait:.0f}s"


def _render(status: Status) -> Group:
    queues = Table(title="queues")
    columns = ("queue", "messages", "ready", "unacked", "consumers", "in/s", "out/s", "wait")
    for column in columns:
        queues.add_column(column)
    for q in status.queues:
        queues.add_row(
            q.name,
            str(q.messages),
            str(q.ready),
            str(q.unacked),
            str(q.consumers),
            f"{q.publish_rate:.1f}",
            f"{q.deliver_rate:.1f}",
            _wait(q),
        )
    catalog = (
        "no vulnerability catalog imported"
        if status.catalog_revision is None
        else f"catalog revision {status.catalog_revision}, "
        f"{(status.catalog_age_s or 0) / 3600:.1f} h old"
    )
    tenants = Table(title=f"tenants ({catalog})")
    for column in (
        "tenant",
        "status",
        "hosts",
        "reports/min",
        "last commit",
        "open findings",
        "problem",
    ):
        tenants.add_column(column)
    for t in status.tenants:
        tenants.add_row(
            t.slug,
            t.status if t.moving is None else f"{t.status}, moving {t.moving}",
            str(t.hosts),
            "-" if t.reports_last_minute is None else str(t.reports_last_minute),
            t.last_commit.isoformat(timespec="seconds") if t.last_commit else "-",
            "-" if t.open_findings is None else str(t.open_findings),
            t.error or "",
        )
    letters = Table(title="dead letters by reason")
    for column in ("queue", "reason", "count"):
        letters.add_column(column)
    for queue, reasons in sorted(status.dead_letters.items()):
        for reason, count in sorted(reasons.items()):
            letters.add_row(queue, reason, str(count))
    return Group(queues, tenants, letters)


@click.command()
@json_option
@click.option("--watch", is_flag=True, help="Refresh every few seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=1), default=5.0, show_default=True)
@pass_app
def status(app: AppContext, as_json: bool, watch: bool, interval: float) -> None:
    """Queues (depth, consumers, rates), tenants (hosts, reports in the last minute, last
    commit) and dead letters by reason."""
    if watch and as_json:
        raise click.UsageError("--watch draws a live view: it does not mix with --json")
    if not watch:
        current = run(collect(app.settings))
        if as_json:
            print_json(current.as_json())
        else:
            console().print(_render(current))
        return

    async def live() -> None:
        with Live(_render(await collect(app.settings)), refresh_per_second=1) as view:
            while True:
                await asyncio.sleep(interval)
                view.update(_render(await collect(app.settings)))

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
        run(live())
