"""`siloflow token ...`: enrollment tokens, issued per tenant, shown once."""

from __future__ import annotations

import uuid

import click

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.durations import parse_duration
from services.core.errors import InvalidArgument
from services.ops import tokens


@click.group()
def token() -> None:
    """Enrollment tokens: how hosts join a tenant."""


@token.command("issue")
@click.option("--tenant", "slug", required=True, help="The tenant hosts registering with it join.")
@click.option(
    "--ttl", default="24h", show_default=True, help="How long it is valid (e.g. 30m, 7d)."
)
@click.option(
    "--uses",
    type=click.IntRange(1, 1_000_000),
    default=1,
    show_default=True,
    help="How many hosts may register with it.",
)
@click.option("--note", help="Free text for operators (where it went, for what).")
@json_option
@pass_app
@audited("token.issue", tenant="slug")
def issue(app: AppContext, slug: str, ttl: str, uses: int, note: str | None, as_json: bool) -> None:
    """Issue a token. It is printed once and only its hash is stored: copy it now."""
    try:
        lifetime = parse_duration(ttl)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    issued = run(tokens.issue(app.settings, slug, ttl=lifetime, uses=uses, note=note))
    if as_json:
        print_json({"token": issued.token, **issued.info.as_json()})
        return
    click.echo(issued.token)
    click.echo(
        f"(token {issued.info.id} for tenant {slug}: {uses} use(s), expires "
        f"{issued.info.expires_at.isoformat()}; shown once, only its hash is kept)",
        err=True,
    )


@token.command("list")
@click.option("--tenant", "slug", help="Only this tenant's tokens.")
@json_option
@pass_app
def list_(app: AppContext, slug: str | None, as_json: bool) -> None:
    """Tokens and their state (never the secret)."""
    infos = run(tokens.list_tokens(app.settings, slug))
    if as_json:
        print_json([i.as_json() for i in infos])
        return
    print_table(
        None,
        ("id", "tenant", "state", "uses left", "expires", "note"),
        [
            (
                i.id,
                i.tenant,
                i.state,
                f"{i.uses_left}/{i.uses_total}",
                i.expires_at.isoformat(timespec="seconds"),
                i.note,
            )
            for i in infos
        ],
    )


@token.command("revoke")
@click.argument("token_id", type=click.UUID)
@pass_app
@audited("token.revoke")
def revoke(app: AppContext, token_id: uuid.UUID) -> None:
    """Revoke a token: registrations with it are rejected from now on."""
    info = run(tokens.revoke(app.settings, token_id))
    click.echo(f"token {info.id} ({info.tenant}) revoked")
