"""`siloflow host ...`: bind hosts to tenants by hand (enrollment is the usual way)."""

from __future__ import annotations

import uuid

import click

from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core import hosts


@click.group()
def host() -> None:
    """Which tenant each host belongs to."""


@host.command("bind")
@click.argument("host_id", type=click.UUID)
@click.option("--tenant", "slug", required=True, help="The tenant the host belongs to.")
@click.option("--move", is_flag=True, help="Move a host bound to another tenant.")
@pass_app
def bind(app: AppContext, host_id: uuid.UUID, slug: str, move: bool) -> None:
    """Bind HOST_ID (a UUID) to a tenant."""
    outcome = run(hosts.bind(app.settings, host_id, slug, move=move))
    click.echo(f"host {host_id} {outcome} (tenant {slug})")


@host.command("unbind")
@click.argument("host_id", type=click.UUID)
@pass_app
def unbind(app: AppContext, host_id: uuid.UUID) -> None:
    """Remove a host's binding: its reports are dead-lettered as unrouted from then on."""
    run(hosts.unbind(app.settings, host_id))
    click.echo(f"host {host_id} unbound")


@host.command("list")
@click.option("--tenant", "slug", help="Only this tenant's hosts.")
@json_option
@pass_app
def list_(app: AppContext, slug: str | None, as_json: bool) -> None:
    """Bound hosts."""
    bindings = run(hosts.list_hosts(app.settings, slug))
    if as_json:
        print_json([b.as_json() for b in bindings])
    else:
        print_table(
            None,
            ("host", "tenant", "bound at", "revoked at"),
            [(b.host_id, b.tenant_slug, b.bound_at, b.revoked_at) for b in bindings],
        )
