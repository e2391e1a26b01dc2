"""`siloflow placement ...`: the PostgreSQL servers tenant databases may live on."""

from __future__ import annotations

import click

from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.errors import InvalidArgument
from services.core.registry import queries as registry
from services.ops import records
from services.ops.tenants import registry_connection


@click.group()
def placement() -> None:
    """Where tenant databases live (server host and port; never a password)."""


@placement.command("add")
@click.argument("name")
@click.option("--host", required=True, help="The PostgreSQL server's host.")
@click.option("--port", type=click.IntRange(1, 65535), default=5432, show_default=True)
@click.option("--note", help="Free text for operators.")
@pass_app
def add(app: AppContext, name: str, host: str, port: int, note: str | None) -> None:
    """Record a server. Bootstrap the provisioner role there before placing tenants on it."""

    async def insert() -> None:
        async with registry_connection(app.settings) as conn:
            existing = await records.get_placement(conn, name)
            if existing is not None:
                raise InvalidArgument(
                    f"placement {name!r} already exists ({existing.host}:{existing.port})"
                )
            await records.ensure_placement(conn, registry.Placement(name, host, port, note))
            await conn.commit()

    run(insert())
    click.echo(f"placement {name} -> {host}:{port}")


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
