"""`siloflow placement ...`: the PostgreSQL servers tenant databases may live on."""

from __future__ import annotations

import click

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.errors import InvalidArgument
from services.core.registry import queries as registry
from services.ops import placements, records
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
@audited("placement.add")
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
    """Every placement: its tenants, their databases' size, and whether its server answers."""
    views = run(placements.survey(app.settings))
    if as_json:
        print_json([v.as_json() for v in views])
        return
    print_table(
        None,
        ("name", "server", "tenants", "size", "reachable", "note"),
        [
            (
                v.placement.name + (" (draining)" if v.placement.draining else ""),
                f"{v.placement.host}:{v.placement.port}",
                str(len(v.tenants)) + (f" (+{len(v.incoming)} moving in)" if v.incoming else ""),
                "-" if v.database_bytes is None else f"{v.database_bytes / 2**20:,.1f} MiB",
                "yes" if v.reachable else f"no: {v.error}",
                v.placement.note or "",
            )
            for v in views
        ],
    )


@placement.command("drain")
@click.argument("name")
@click.option("--to", "to", help="Move every tenant there (default: by the placing rule).")
@click.option("--cancel", is_flag=True, help="Stop treating the placement as being drained.")
@json_option
@pass_app
@audited("placement.drain")
def drain(app: AppContext, name: str, to: str | None, cancel: bool, as_json: bool) -> None:
    """Move every tenant off a placement, one at a time (run it again to resume); it takes no
    new tenant meanwhile."""
    if cancel:
        if to is not None:
            raise click.UsageError("--cancel takes no --to")
        run(placements.set_draining(app.settings, name, False))
        click.echo(f"placement {name} takes new tenants again")
        return

    def say(step: object, detail: str) -> None:
        click.echo(f"[{step or 'drain'}] {detail}", err=as_json)

    done = run(placements.drain(app.settings, name, to=to, say=say))
    if as_json:
        print_json({"placement": name, "moved": done.moved, "left": done.left})
        return
    click.echo(f"placement {name} drained: {len(done.moved)} tenant(s) moved")
    for slug, why in done.left.items():
        click.echo(f"left tenant {slug}: {why}")
    if done.left:
        raise click.ClickException(f"{len(done.left)} tenant(s) could not be moved off {name}")
