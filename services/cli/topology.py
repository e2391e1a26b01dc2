"""`siloflow topology ...`: the broker side of a deployment, for operators."""

from __future__ import annotations

import click

from services.cli.common import AppContext, pass_app, print_json, run
from services.core import topology as topology_mod
from services.core.names import Names


@click.group()
def topology() -> None:
    """Exchanges, queues and policies in RabbitMQ."""


@topology.command("export")
@click.option("--tenant", "tenants", multiple=True, help="Include this tenant's queue.")
@pass_app
def export(app: AppContext, tenants: tuple[str, ...]) -> None:
    """Print the topology as a definitions document for the management console's import."""
    print_json(topology_mod.definitions(app.settings, list(tenants)))


@topology.command("apply")
@click.option(
    "--overwrite-policies",
    is_flag=True,
    help="Reset the policies to the settings' values (operators' changes are lost).",
)
@pass_app
def apply(app: AppContext, overwrite_policies: bool) -> None:
    """Declare the exchanges and fixed queues, and create missing policies."""

    async def go() -> list[str]:
        connection = await topology_mod.connect(app.settings, name="topology")
        try:
            await topology_mod.declare_base(connection, Names(app.settings.namespace))
        finally:
            await connection.close()
        return await topology_mod.ensure_policies(app.settings, overwrite=overwrite_policies)

    written = run(go())
    click.echo("topology declared; policies written: " + (", ".join(written) or "none"))
