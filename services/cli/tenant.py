"""`siloflow tenant ...`: create, list, show, suspend, resume, move, backup, restore, delete."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.domain import MoveStep, TenantStatus
from services.core.errors import InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.core.registry.queries import TenantRecord
from services.ops import backups, moves, placements, tenants


def _rows(records: list[TenantRecord]) -> list[tuple[object, ...]]:
    return [
        (
            r.slug,
            r.name,
            r.status
            if r.move is None
            else f"{r.status}, moving to {r.move.target} ({r.move.step})",
            r.db_name,
            "-"
            if r.placement is None
            else f"{r.placement.name} ({r.placement.host}:{r.placement.port})",
            r.schema_revision or "-",
        )
        for r in records
    ]


_COLUMNS = ("slug", "name", "status", "database", "placement", "schema")


@click.group()
def tenant() -> None:
    """Tenants: each with its own database (its silo)."""


@tenant.command("create")
@click.argument("slug")
@click.option("--name", help="A display name (defaults to the slug).")
@click.option(
    "--placement",
    help="Which PostgreSQL server holds its database (default: the reachable placement with "
    "the fewest tenants that is not being drained).",
)
@json_option
@pass_app
@audited("tenant.create", tenant="slug")
def create(
    app: AppContext, slug: str, name: str | None, placement: str | None, as_json: bool
) -> None:
    """Provision a tenant; run it again to resume one that was interrupted."""
    result = run(
        tenants.create_tenant(
            app.settings,
            slug,
            name=name,
            placement=placement,
            choose=lambda: placements.for_new_tenant(app.settings),
        )
    )
    if as_json:
        print_json({**result.tenant.as_json(), "resumed": result.resumed})
        return
    verb = "resumed and finished" if result.resumed else "created"
    click.echo(
        f"{verb} tenant {slug}: database {result.tenant.db_name}, "
        f"schema {result.tenant.schema_revision}"
    )


@tenant.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """All tenants with status, placement and schema revision."""

    async def fetch() -> list[TenantRecord]:
        async with tenants.registry_connection(app.settings) as conn:
            return await registry.list_tenants(conn)

    records = run(fetch())
    if as_json:
        print_json([r.as_json() for r in records])
    else:
        print_table(None, _COLUMNS, _rows(records))


@tenant.command("show")
@click.argument("slug")
@json_option
@pass_app
def show(app: AppContext, slug: str, as_json: bool) -> None:
    """One tenant."""

    async def fetch() -> TenantRecord:
        async with tenants.registry_connection(app.settings) as conn:
            record = await registry.get_tenant(conn, slug)
        if record is None:
            raise TenantNotFound(slug)
        return record

    record = run(fetch())
    if as_json:
        print_json(record.as_json())
    else:
        for key, value in record.as_json().items():
            click.echo(f"{key:22} {value}")


@tenant.command("suspend")
@click.argument("slug")
@json_option
@pass_app
@audited("tenant.suspend", tenant="slug")
def suspend(app: AppContext, slug: str, as_json: bool) -> None:
    """Stop committing this tenant's reports (they are held back, not lost)."""
    record = run(tenants.set_tenant_status(app.settings, slug, TenantStatus.SUSPENDED))
    print_json(record.as_json()) if as_json else click.echo(f"tenant {slug} is suspended")


@tenant.command("resume")
@click.argument("slug")
@json_option
@pass_app
@audited("tenant.resume", tenant="slug")
def resume(app: AppContext, slug: str, as_json: bool) -> None:
    """Make a suspended tenant active again."""
    record = run(tenants.set_tenant_status(app.settings, slug, TenantStatus.ACTIVE))
    print_json(record.as_json()) if as_json else click.echo(f"tenant {slug} is active")


@tenant.command("move")
@click.argument("slug")
@click.option("--to", "to", help="The placement to move the tenant's database to.")
@click.option(
    "--keep-source",
    is_flag=True,
    help="Keep the source database (closed to the tenant's logins) instead of dropping it.",
)
@click.option("--abort", is_flag=True, help="Roll back a move that has not switched yet.")
@json_option
@pass_app
@audited("tenant.move", tenant="slug")
def move(
    app: AppContext, slug: str, to: str | None, keep_source: bool, abort: bool, as_json: bool
) -> None:
    """Move a tenant's database to another placement while its agents keep reporting; run it
    again (without --to) to resume an interrupted move."""

    def say(step: MoveStep | None, detail: str) -> None:
        click.echo(f"[{step or 'move'}] {detail}", err=as_json)

    if abort:
        if to is not None or keep_source:
            raise click.UsageError("--abort takes no --to or --keep-source: it rolls back")
        record = run(moves.abort_move(app.settings, slug, say))
        if as_json:
            print_json(record.as_json())
        return
    result = run(moves.move_tenant(app.settings, slug, to=to, keep_source=keep_source, say=say))
    if as_json:
        print_json(
            {
                "tenant": result.tenant,
                "from": result.source.name,
                "to": result.target.name,
                "kept_source": result.kept_source,
                "copied_bytes": result.copied_bytes,
                "rows": result.rows,
            }
        )
    else:
        click.echo(f"moved tenant {slug} from {result.source.name} to {result.target.name}")


@tenant.command("backup")
@click.argument("slug")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (never over an existing one).",
)
@json_option
@pass_app
@audited("tenant.backup", tenant="slug")
def backup(app: AppContext, slug: str, out: Path, as_json: bool) -> None:
    """Write a consistent dump of the tenant's silo, and nothing else, to a file (the tenant
    keeps committing meanwhile)."""
    try:
        backups.check_out(out)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    manifest = run(
        backups.backup(app.settings, slug, out, lambda line: click.echo(line, err=as_json))
    )
    if as_json:
        print_json({"file": str(out), **asdict(manifest)})


@tenant.command("restore")
@click.argument("slug")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file `tenant backup` wrote.",
)
@click.option("--placement", help="Where a new tenant's database goes (default: 'default').")
@click.option(
    "--replace-data-of",
    "replace",
    metavar="SLUG",
    help="Replace the data of this (suspended) tenant: say its slug again to mean it.",
)
@json_option
@pass_app
@audited("tenant.restore", tenant="slug")
def restore(
    app: AppContext,
    slug: str,
    source: Path,
    placement: str | None,
    replace: str | None,
    as_json: bool,
) -> None:
    """Restore a backup into a new tenant, or into a suspended one (refused if it has data,
    unless --replace-data-of names it); an older schema is migrated after restoring."""
    record = run(
        backups.restore(
            app.settings,
            slug,
            source,
            placement=placement,
            replace=replace,
            say=lambda line: click.echo(line, err=as_json),
        )
    )
    if as_json:
        print_json(record.as_json())


@tenant.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Really drop the tenant's database and roles.")
@pass_app
@audited("tenant.delete", tenant="slug")
def delete(app: AppContext, slug: str, yes: bool) -> None:
    """Drop a tenant's database and roles, then its registry rows. Needs --yes."""
    if not yes:
        raise click.UsageError(
            f"deleting tenant {slug!r} drops its database and every report in it; "
            "add --yes to confirm"
        )
    record = run(tenants.delete_tenant(app.settings, slug))
    click.echo(f"deleted tenant {slug} (database {record.db_name} dropped)")
