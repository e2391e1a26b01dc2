"""`siloflow`: the entry point and its top-level commands (bootstrap, migrate)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from services.cli.agent import agent
from services.cli.audit import audit, audited
from services.cli.bench import bench
from services.cli.broker import broker
from services.cli.catalog import catalog
from services.cli.common import (
    AppContext,
    json_option,
    one_line,
    pass_app,
    print_json,
    print_table,
    run,
)
from services.cli.demo import demo
from services.cli.dlq import dlq_group
from services.cli.findings import findings
from services.cli.host import host
from services.cli.openbao import openbao
from services.cli.operator import operator
from services.cli.placement import placement
from services.cli.run import run_group
from services.cli.simulate import simulate
from services.cli.status import status
from services.cli.tenant import tenant
from services.cli.token import token
from services.cli.topology import topology
from services.core.errors import SettingsError
from services.core.hostkeys import load_keyring, write_keyring
from services.ops import migrate as migrate_mod
from services.ops.bootstrap import bootstrap as bootstrap_op
from services.ops.bootstrap import teardown as teardown_op

CONFIG_ENV = "SILOFLOW_CONFIG"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help="A TOML settings file (environment variables SILOFLOW_* override it).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log at SILOFLOW_LOG_LEVEL on stderr (commands log only warnings and errors otherwise).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """siloflow: agents' reports, routed to each tenant's own database."""
    if config is not None:
        # The processes this one starts (`run all`, the worker supervisor, the demo's services)
        # read the same file: they inherit the environment, not the command line.
        os.environ[CONFIG_ENV] = str(config.resolve())
    ctx.obj = AppContext(config, verbose=verbose)


@cli.command()
@click.option(
    "--admin-dsn",
    required=True,
    help="A superuser DSN, e.g. postgresql://postgres@127.0.0.1/postgres. Used only here.",
)
@json_option
@pass_app
def bootstrap(app: AppContext, admin_dsn: str, as_json: bool) -> None:
    """Create the provisioner role and the control-plane databases (once, as a superuser)."""
    report = run(bootstrap_op(app.settings, admin_dsn))
    if as_json:
        print_json(
            {
                "provisioner_role": report.provisioner_role,
                "databases": report.databases,
                "created": report.created,
                "kept": report.kept,
            }
        )
        return
    for item in report.created:
        click.echo(f"created {item}")
    for item in report.kept:
        click.echo(f"kept    {item} (already there)")
    click.echo("next: siloflow migrate")


@cli.command()
@click.option(
    "--admin-dsn",
    "admin_dsns",
    required=True,
    multiple=True,
    help="A superuser DSN, as for bootstrap; again for each placement's server.",
)
@click.option("--yes", is_flag=True, help="Really remove everything this deployment created.")
@pass_app
def teardown(app: AppContext, admin_dsns: tuple[str, ...], yes: bool) -> None:
    """Remove every tenant, queue, policy, database and role of this namespace. Needs --yes."""
    if not yes:
        raise click.UsageError(
            f"teardown removes every tenant database and queue of namespace "
            f"{app.settings.namespace!r}, with every report in them; add --yes to confirm"
        )
    for item in run(teardown_op(app.settings, *admin_dsns)):
        click.echo(f"removed {item}")


@cli.group()
def hostkeys() -> None:
    """The server secrets host keys derive from."""


@hostkeys.command("rotate")
@pass_app
@audited("hostkeys.rotate")
def rotate(app: AppContext) -> None:
    """Add a new secret version to the key file: hosts registered from now on get keys of it;
    hosts registered before keep theirs. Restart ingest to pick it up."""
    settings = app.settings
    if settings.host_key_secrets is not None:
        raise click.UsageError(
            "the secrets come from SILOFLOW_HOST_KEY_SECRETS: add a version there "
            "(`<n+1>:<base64 of 32 random bytes>`) and restart ingest"
        )
    try:
        keyring = load_keyring(settings).rotated()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    write_keyring(settings.host_key_file, keyring)
    click.echo(
        f"{settings.host_key_file}: versions {sorted(keyring.secrets)}, new hosts get "
        f"version {keyring.current}; restart ingest to use it"
    )


@cli.command()
@click.option("--status", "show_status", is_flag=True, help="Show each database's revision.")
@click.option("--dry-run", is_flag=True, help="Show what would be applied; change nothing.")
@json_option
@pass_app
@audited("migrate", unless=("show_status", "dry_run"))
def migrate(app: AppContext, show_status: bool, dry_run: bool, as_json: bool) -> None:
    """Upgrade the registry and shared chains, then every tenant database.

    A tenant whose database fails is reported and the others still migrate; the exit status is 1
    if any failed.
    """
    if show_status and dry_run:
        raise click.UsageError("--status and --dry-run are two views of the same plan: pick one")
    read_only = show_status or dry_run
    report = run(migrate_mod.plan(app.settings) if read_only else migrate_mod.migrate(app.settings))
    if as_json:
        print_json({"targets": [t.as_json() for t in report.targets], "failed": len(report.failed)})
    else:
        rows = []
        for t in report.targets:
            if t.error is not None:
                state = f"FAILED: {t.error}"
            elif t.skipped is not None:
                state = f"skipped ({t.skipped})"
            elif t.applied:
                state = f"applied {', '.join(t.applied)}"
            elif t.pending:
                state = ("would apply " if dry_run else "pending ") + ", ".join(t.pending)
            else:
                state = "at head"
            rows.append((t.label, t.database, t.current or "-", t.head, state))
        print_table(None, ("target", "database", "revision", "head", "state"), rows)
    if report.failed:
        raise click.ClickException(
            f"{len(report.failed)} database(s) failed: " + ", ".join(t.label for t in report.failed)
        )


cli.add_command(tenant)
cli.add_command(operator)
cli.add_command(placement)
cli.add_command(host)
cli.add_command(run_group)
cli.add_command(topology)
cli.add_command(simulate)
cli.add_command(token)
cli.add_command(agent)
cli.add_command(dlq_group)
cli.add_command(status)
cli.add_command(openbao)
cli.add_command(bench)
cli.add_command(broker)
cli.add_command(catalog)
cli.add_command(findings)
cli.add_command(audit)


def main() -> None:
    """The `siloflow` command: a failure of what a command needs ends it with one line, in any
    code path (`common.run` says it for the commands' coroutines)."""
    try:
        cli(prog_name="siloflow", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        line = one_line(exc)
        if line is None:
            raise
        click.echo(f"Error: {line}", err=True)
        sys.exit(1)


cli.add_command(demo)
