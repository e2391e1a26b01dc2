"""`siloflow openbao setup`: the one-time OpenBao side of a deployment, run by its administrator."""

from __future__ import annotations

import click

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, run
from services.ops import openbao as openbao_mod


@click.group()
def openbao() -> None:
    """OpenBao as the issuer of tenant logins (SILOFLOW_CREDENTIALS=openbao)."""


@openbao.command("setup")
@click.option(
    "--token",
    envvar="BAO_TOKEN",
    required=True,
    help="An OpenBao token allowed to mount engines and write policies (env BAO_TOKEN). "
    "Used only here: services log in with the AppRoles this prints.",
)
@json_option
@pass_app
@audited("openbao.setup")
def setup(app: AppContext, token: str, as_json: bool) -> None:
    """Mount the database secrets engine (SILOFLOW_OPENBAO_MOUNT), enable AppRole, and write this
    deployment's two policies and AppRoles: the provisioner's (registers and revokes tenants) and
    the services' (reads and renews logins). Idempotent; each run issues new secret ids."""
    ids = run(openbao_mod.setup(app.settings, token))
    if as_json:
        print_json(ids)
        return
    click.echo(
        f"OpenBao at {app.settings.openbao_addr} is ready "
        f"(database secrets engine at {app.settings.openbao_mount}/)."
    )
    uses = {"provisioner": "siloflow tenant ...", "service": "siloflow run ..."}
    for who, use in uses.items():
        click.echo(f"\n# for the {who} ({use}):")
        click.echo("export SILOFLOW_CREDENTIALS=openbao")
        click.echo(f"export SILOFLOW_OPENBAO_ROLE_ID={ids[f'{who}_role_id']}")
        click.echo(f"export SILOFLOW_OPENBAO_SECRET_ID={ids[f'{who}_secret_id']}")
