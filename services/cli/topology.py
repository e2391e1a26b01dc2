"""`siloflow topology ...`: the broker side of a deployment, for operators."""

from __future__ import annotations

import click

from services.cli.common import AppContext, pass_app, print_json, run
from services.core import registry
from services.core import topology as topology_mod
from services.core.broker_users import BrokerRole
from services.core.names import Names
from services.core.tenants import registry_connection


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
    """Declare the exchanges, the fixed queues and every active tenant's queue (with their
    bindings), and create missing policies."""
    settings = app.settings

    async def go() -> list[str]:
        async with registry_connection(settings) as conn:
            active = [t.slug for t in await registry.list_tenants(conn, statuses=("active",))]
        connection = await topology_mod.connect(settings, name="topology", role=BrokerRole.TOPOLOGY)
        try:
            await topology_mod.declare_base(connection, Names(settings.namespace))
            for slug in active:
                await topology_mod.declare_tenant_queue(connection, Names(settings.namespace), slug)
        finally:
            await connection.close()
        return await topology_mod.ensure_policies(settings, overwrite=overwrite_policies)

    written = run(go())
    click.echo("topology declared; policies written: " + (", ".join(written) or "none"))
