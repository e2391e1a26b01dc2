"""`siloflow placement ...`: the PostgreSQL servers tenant databases may live on."""

from __future__ import annotations

import click

from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.errors import InvalidArgument
from services.core.registry import queries as registry
from services.ops import records
from services.ops.bootstrap import prepare_server
from services.ops.tenants import registry_connection


@click.group()
def placement() -> None:
    """Where tenant databases live (server host and port; never a password)."""


@placement.command("add")
@click.argument("name")
@click.option("--host", required=True, help="The PostgreSQL server's host.")
@click.option("--port", type=click.IntRange(1, 65535), default=5432, show_default=True)
@click.option("--note", help="Free text for operators.")
@click.option(
    "--admin-dsn",
    help="That server's superuser DSN: prepares it (the provisioner role) in the same step. "
    "Used once, never stored.",
)
@pass_app
def add(
    app: AppContext, name: str, host: str, port: int, note: str | None, admin_dsn: str | None
) -> None:
    """Record a server, and with --admin-dsn prepare it for tenant databases (again on an
    existing placement of the same server: the role is created or brought up to date)."""

    async def recorded() -> registry.Placement | None:
        async with registry_connection(app.settings) as conn:
            existing = await records.get_placement(conn, name)
        if existing is not None and (
            admin_dsn is None or (existing.host, existing.port) != (host, port)
        ):
            raise InvalidArgument(
                f"placement {name!r} already exists ({existing.host}:{existing.port})"
            )
        return existing

    async def insert() -> None:
        async with registry_connection(app.settings) as conn:
            await records.ensure_placement(conn, registry.Placement(name, host, port, note))
            await conn.commit()

    # Checked before anything changes: a name taken, or a DSN of another server, changes nothing.
    existing = run(recorded())
    if admin_dsn is not None:
        for line in run(prepare_server(app.settings, admin_dsn, host, port)):
            click.echo(line)
    if existing is None:
        run(insert())
    click.echo(f"placement {name} -> {host}:{port}")
    if admin_dsn is None:
        click.echo(
            f"before placing tenants there, prepare the server once: siloflow placement add "
            f"{name} --host {host} --port {port} --admin-dsn <that server's superuser DSN>"
        )


@placement.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """All placements."""

    async def fetch() -> list[registry.Placement]:
        async with registry_connection(app.settings) as conn:
            return await records.list_placements(conn)

    placements = run(fetch())
    if as_json:
        print_json(
            [{"name": p.name, "host": p.host, "port": p.port, "note": p.note} for p in placements]
        )
    else:
        print_table(
            None,
            ("name", "host", "port", "note"),
            [(p.name, p.host, p.port, p.note) for p in placements],
        )
