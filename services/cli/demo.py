"""`siloflow demo`: the main job on this machine, watched live; `--down` removes it again."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
from rich.console import Console

from services.cli.common import AppContext, pass_app, run, undone_on_signals
from services.demo import run as demo_run


@click.command()
@click.option(
    "--admin-dsn",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    help="A superuser DSN for the one-time bootstrap (and for --down).",
)
@click.option("--tenants", default="acme,globex,initech", show_default=True)
@click.option(
    "--hosts",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Hosts enrolled per tenant.",
)
@click.option("--reports", type=click.IntRange(1), default=3000, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Reports per second the fleet publishes.",
)
@click.option("--down", is_flag=True, help="Remove everything the demo created, and stop.")
@pass_app
def demo(
    app: AppContext, admin_dsn: str, tenants: str, hosts: int, reports: int, rate: float, down: bool
) -> None:
    """Bootstrap, provision tenants, start every service, enroll a fleet with tokens and let it
    report (with a few misbehaving hosts), showing each report land in its tenant's database."""
    console = Console(soft_wrap=True)  # commands stay on one line, to copy them whole
    if down:
        removed = run(demo_run.down(app.settings, admin_dsn))
        for item in removed:
            console.print(f"removed {item}")
        if not removed:
            console.print(f"nothing of namespace {app.settings.namespace!r} is left to remove")
        return
    slugs = tuple(s.strip() for s in tenants.split(",") if s.strip())
    if not slugs:
        raise click.BadParameter("name at least one tenant", param_hint="--tenants")
    options = demo_run.Options(
        admin_dsn=admin_dsn,
        tenants=slugs,
        hosts_per_tenant=hosts,
        reports=reports,
        rate_per_s=rate,
    )
    env = dict(os.environ)  # with SILOFLOW_CONFIG when --config was given (see `cli`)
    result = run(
        undone_on_signals(
            demo_run.demo(app.settings, options, env, console),
            after="its services are stopped; `siloflow demo --down` removes the rest",
        )
    )
    summarise(console, app, result)
    if not result.settled:
        raise click.ClickException(
            f"not every report landed within the time allowed: see {result.log}"
        )


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{host}{parts.path}"


def summarise(console: Console, app: AppContext, result: demo_run.Result) -> None:
    """What landed where, and the commands to look closer (one per line, never wrapped)."""
    settings = app.settings
    console.print()
    published = sum(result.outcome.published.values())
    console.print(
        f"[bold green]{sum(result.committed.values()):,} of {published:,} reports committed[/] "
        f"in {result.elapsed_s:.0f} s, each in its own tenant's database:"
    )
    for slug, count in sorted(result.committed.items()):
        console.print(f"  {slug:10} {count:6,}  (published {result.outcome.per_tenant[slug]:,})")
    console.print(
        f"[bold]vulnerabilities[/] (the shipped bookworm catalog, revision "
        f"{result.catalog_revision}; matched as each packages snapshot commits):"
    )
    for slug, (hosts, found) in sorted(result.findings.items()):
        console.print(f"  {slug:10} {found:6,} open findings on {hosts} host(s)")
    console.print("[bold]dead letters[/] (the misbehaving publishers, and any before):")
    for queue, reasons in sorted(result.dead_letters.items()):
        for reason, count in sorted(reasons.items()):
            console.print(f"  {queue:14} {reason:20} {count}")
    console.print("\n[bold]Where to look next[/]")
    console.print(f"  management console  {_without_credentials(settings.management_api)}")
    for slug, database in sorted(result.databases.items()):
        console.print(
            f"  {slug:18}  psql -h 127.0.0.1 -U postgres -d {database} "
            "-c 'select hostname, status, last_seen_at from hosts limit 5'"
        )
    siloflow = command_path()
    console.print(f"  the deployment      {siloflow} status")
    first = sorted(result.findings)[0] if result.findings else "acme"
    console.print(f"  findings            {siloflow} findings --tenant {first}")
    console.print(f"  dead letters        {siloflow} dlq list   (then: {siloflow} dlq show <id>)")
    console.print(
        f"  keep it running     {siloflow} run all    and   "
        f"{siloflow} simulate --rate 200 --duration 30"
    )
    console.print(f"  services' log       {result.log}")
    console.print(f"  remove it all       {siloflow} demo --down   (or: make demo-down)")
    if siloflow != "siloflow":
        activate = Path(sys.executable).parent / "activate"
        console.print(f"  (or put siloflow on your PATH first: source {_relative(activate)})")


def command_path() -> str:
    """How to run this very `siloflow` from a plain shell: its bare name when that is what the
    shell finds, else its path (relative to here when under it)."""
    mine = Path(sys.executable).parent / "siloflow"
    found = shutil.which("siloflow")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "siloflow"
    return _relative(mine)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
