"""`siloflow run ingest|router|workers|all`: the services, alone or together."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from services.api import app as api_app
from services.cli.common import AppContext, Misconfigured, pass_app
from services.cli.common import run as run_coro
from services.cli.supervisor import MISCONFIGURED, Child, supervise
from services.core.broker.connection import connect
from services.core.broker.users import SERVICE_ROLES
from services.core.errors import BrokerUnavailable, SettingsError
from services.core.hostkeys import load_keyring
from services.core.lifespan import stop_on_signals
from services.ingest import app as ingest_app
from services.router import app as router_app
from services.sweeper import app as sweeper_app
from services.workers import app as workers_app
from services.workers.assignment import Shard

burst_option = click.option(
    "--burst", is_flag=True, help="Drain the queues, then exit (for tests and one-off catch-up)."
)


@click.group("run")
@pass_app
def run_group(app: AppContext) -> None:
    """Run siloflow's services (they log at SILOFLOW_LOG_LEVEL, JSON when not on a terminal)."""
    app.serving = True


@run_group.command("ingest")
@burst_option
@pass_app
def ingest(app: AppContext, burst: bool) -> None:
    """Enroll hosts: answer registrations (an enrollment token in, a host id and key out)."""
    run_coro(ingest_app.run(app.settings, burst=burst), event_loop=app.settings.event_loop)


@run_group.command("sweeper")
@burst_option
@pass_app
def sweeper(app: AppContext, burst: bool) -> None:
    """Mark silent hosts down and prune old messages in every tenant database (one sweeper is
    active at a time; others wait as standbys). With --burst, one pass."""
    run_coro(sweeper_app.run(app.settings, burst=burst), event_loop=app.settings.event_loop)


@run_group.command("api")
@click.option("--host", help="The address to listen on (default: SILOFLOW_API_HOST).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="The port (default: SILOFLOW_API_PORT)."
)
@pass_app
def api(app: AppContext, host: str | None, port: int | None) -> None:
    """Serve the control-plane HTTP API (operators' tokens; each tenant's data from its silo)."""
    settings = app.settings
    run_coro(
        api_app.run(settings, host=host or settings.api_host, port=port or settings.api_port),
        event_loop=settings.event_loop,
    )


@run_group.command("router")
@burst_option
@pass_app
def router(app: AppContext, burst: bool) -> None:
    """Resolve each report's host to its tenant and forward it to the tenant's queue."""
    run_coro(router_app.run(app.settings, burst=burst), event_loop=app.settings.event_loop)


def _shard(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@run_group.command("workers")
@click.option("--tenant", "tenants", multiple=True, help="Pin this process to these tenants.")
@click.option("--shard", callback=_shard, help="Pin this process to its share: INDEX/COUNT.")
@click.option(
    "--processes",
    type=click.IntRange(1, 1024),
    help="Worker processes to supervise (default: SILOFLOW_WORKER_PROCESSES, else CPUs).",
)
@burst_option
@pass_app
def workers(
    app: AppContext,
    tenants: tuple[str, ...],
    shard: Shard | None,
    processes: int | None,
    burst: bool,
) -> None:
    """Commit tenants' reports to their databases.

    With --tenant or --shard this process consumes those tenants itself. Without, it supervises
    worker processes, each pinned to a stable share of the active tenants.
    """
    if tenants and shard:
        raise click.UsageError("--tenant and --shard both pin the process: pick one")
    if tenants or shard:
        run_coro(
            workers_app.run(app.settings, tenants=set(tenants) or None, shard=shard, burst=burst),
            event_loop=app.settings.event_loop,
        )
        return
    count = processes or app.settings.worker_processes or os.cpu_count() or 1
    base = app.settings.metrics_port
    children = [
        Child(
            f"workers-{i}",
            ["run", "workers", "--shard", f"{i}/{count}", *(["--burst"] if burst else [])],
            env=_port_env(base, i),
        )
        for i in range(count)
    ]
    _supervise(app, children, burst)


@run_group.command("all")
@burst_option
@pass_app
def all_(app: AppContext, burst: bool) -> None:
    """Ingest, router, the worker supervisor, the sweeper and the API, each as its own process.
    With --burst, each stage drains in turn (ingest, router, workers, one sweep) and it exits."""
    try:  # what waiting cannot mend, said once before anything starts
        load_keyring(app.settings)
        run_coro(_logins_accepted(app))
    except SettingsError as exc:
        raise Misconfigured(str(exc)) from None
    # The worker supervisor goes last: its shards take consecutive metrics ports from its own.
    stages = ("ingest", "router", "sweeper", "workers")
    base = app.settings.metrics_port
    if burst:
        # Draining is ordered: a stage that finds its queue empty before the stage upstream has
        # handed everything on would leave reports behind.
        for name in ("ingest", "router", "workers", "sweeper"):
            _supervise(app, [Child(name, ["run", name, "--burst"])], burst=True)
        return
    children = [Child(name, ["run", name], env=_port_env(base, i)) for i, name in enumerate(stages)]
    # The API serves no metrics port of its own (its /healthz is on its API port): the
    # services keep their consecutive metrics ports.
    children.append(Child("api", ["run", "api"]))
    _supervise(app, children, burst=False)


async def _logins_accepted(app: AppContext) -> None:
    """Each service's broker login, tried once: a refused one stops `run all` with one line
    (each child would say it, and no wait mends it). An unreachable broker is left to the
    children, which say it once and wait for it."""
    for role in SERVICE_ROLES:
        try:
            connection = await connect(app.settings, name="run all: login check", role=role)
        except BrokerUnavailable:
            return
        await connection.close()


def _port_env(base: int | None, offset: int) -> dict[str, str]:
    """A child's metrics port: the parent's plus its place (nothing when metrics are off)."""
    return {} if base is None else {"SILOFLOW_METRICS_PORT": str(base + offset)}


def _supervise(app: AppContext, children: list[Child], burst: bool) -> None:
    async def main() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        return await supervise(children, burst=burst, stop=stop)

    code = run_coro(main())
    if code == MISCONFIGURED:
        sys.exit(code)  # the service said what is wrong, in one line, above
    if code != 0:
        raise click.ClickException("a service exited with an error (see its log above)")
