"""`siloflow topology ...`: the broker side of a deployment, for operators."""

from __future__ import annotations

import click

from services.cli.audit import audited
from services.cli.common import AppContext, pass_app, print_json, run
from services.core.broker.connection import connect
from services.core.broker.users import BrokerRole
from services.core.names import Names
from services.core.registry import queries as registry
from services.ops import topology as topology_mod
from services.ops.tenants import registry_connection


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
@audited("topology.apply")
def apply(app: AppContext, overwrite_policies: bool) -> None:
    """Declare the exchanges, the fixed queues and every active tenant's queue (with their
    bindings), and create missing policies."""
    settings = app.settings

    async def go() -> tuple[list[str], topology_mod.Retired]:
        async with registry_connection(settings) as conn:
            active = [t.slug for t in await registry.active_tenants(conn)]
        connection = await connect(settings, name="topology", role=BrokerRole.TOPOLOGY)
        try:
            written = await topology_mod.ensure_policies(settings, overwrite=overwrite_policies)
            retired = await topology_mod.ensure_topology(settings, connection, active)
        finally:
            await connection.close()
        return written, retired

    written, retired = run(go())
    click.echo("topology declared; policies written: " + (", ".join(written) or "none"))
    legacy = Names(settings.namespace).router_queue
    if retired.removed:
        click.echo(f"removed {legacy} (the three-hop version's router queue; it was empty)")
    elif retired.waiting or retired.consumers:
        click.echo(
            f"kept {legacy}: {retired.waiting} reports still wait there, {retired.consumers} "
            "consumers on it. The router drains it (is `siloflow run router` running?); apply "
            "again once it is empty"
        )
