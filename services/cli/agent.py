"""`siloflow agent ...`: the reference agent on the command line (register once, then report)."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path

import click

from schemas.register import RegisterRejected
from services.agent.client import AgentPublisher, Identity, build_report
from services.agent.collect import dpkg_packages
from services.cli.common import AppContext, pass_app, run
from services.core.broker.users import agent_url
from services.core.errors import RegistrationFailed, SiloflowError

DEFAULT_STATE = Path("siloflow-agent.json")
broker_option = click.option(
    "--broker-url",
    envvar="SILOFLOW_AGENT_URL",
    help="The AMQP URL agents use (`siloflow broker agent-url` prints it). Default: this "
    "machine's, from the file `siloflow bootstrap` wrote.",
)
state_option = click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="Where the host's identity is kept (written 0600).",
)


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip() or str(uuid.getnode())
    except OSError:
        return str(uuid.getnode())


@click.group()
def agent() -> None:
    """A minimal agent: what an agent author reads to learn the protocol."""


@agent.command("register")
@click.option("--token", required=True, help="The enrollment token an operator issued.")
@state_option
@click.option("--hostname", default=socket.gethostname, show_default="this host's name")
@broker_option
@pass_app
def register(
    app: AppContext, token: str, state: Path, hostname: str, broker_url: str | None
) -> None:
    """Register this host; its id and key go to the state file."""
    if state.exists():
        raise click.UsageError(f"{state} exists: this host is registered already")

    async def go() -> Identity | str:
        async with AgentPublisher(
            broker_url or agent_url(app.settings), app.settings.namespace
        ) as publisher:
            try:
                answer = await publisher.register(
                    token, hostname=hostname, fqdn=socket.getfqdn(), machine_id=_machine_id()
                )
            except RegistrationFailed as exc:
                raise SiloflowError(f"{exc} (is `siloflow run ingest` running?)") from None
        if isinstance(answer, RegisterRejected):
            wait = answer.retry_after_s
            return answer.reason + (f" (ask again in {wait:g} s)" if wait else "")
        return Identity.from_answer(answer)

    outcome = run(go())
    if isinstance(outcome, str):
        raise click.ClickException(f"registration rejected: {outcome}")
    outcome.save(state)
    click.echo(f"registered as host {outcome.host_id}; identity saved to {state}")


@agent.command("report")
@click.argument("kind")
@click.option("--data", "data_json", help="The report's data, as JSON.")
@click.option(
    "--collect",
    is_flag=True,
    help="Read the data from this host instead (packages: from dpkg, with source packages).",
)
@state_option
@broker_option
@pass_app
def report(
    app: AppContext,
    kind: str,
    data_json: str | None,
    collect: bool,
    state: Path,
    broker_url: str | None,
) -> None:
    """Publish one signed report of KIND."""
    if (data_json is None) == (not collect):
        raise click.UsageError("give the report's data with --data, or --collect it (not both)")
    if collect and kind != "packages":
        raise click.BadParameter("only packages can be collected", param_hint="KIND")
    try:
        data = dpkg_packages() if collect else json.loads(data_json or "")
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        raise click.ClickException(f"could not read this host's packages: {exc}") from None
    if not state.exists():
        raise click.UsageError(f"{state} does not exist: run `siloflow agent register` first")
    identity = Identity.load(state)

    async def go() -> str:
        outgoing = build_report(kind, identity.host_id, data, identity=identity)
        async with AgentPublisher(
            broker_url or agent_url(app.settings), app.settings.namespace
        ) as publisher:
            await publisher.publish(outgoing)
        return outgoing.message_id

    click.echo(f"published {kind} report {run(go())} (confirmed by the broker)")
