"""`siloflow operator ...`: server-global operators, their grants and their API tokens."""

from __future__ import annotations

import uuid

import click

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.access import Role
from services.core.durations import parse_duration
from services.core.errors import InvalidArgument
from services.ops import operators


@click.group()
def operator() -> None:
    """People who use the API: each with grants (a role on a tenant, or on all) and tokens."""


def _scope(slug: str | None, all_tenants: bool) -> str | None:
    if (slug is None) == (not all_tenants):
        raise click.UsageError("say which tenants: --tenant SLUG or --all (one of them)")
    return slug


def _check_name(name: str) -> None:
    try:
        operators.check_name(name)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


@operator.command("add")
@click.argument("name")
@json_option
@pass_app
@audited("operator.add")
def add(app: AppContext, name: str, as_json: bool) -> None:
    """Record an operator (with no grant yet: they may do nothing)."""
    _check_name(name)
    view = run(operators.add_operator(app.settings, name))
    if as_json:
        print_json(view.as_json())
    else:
        click.echo(f"operator {name} added; grant them a role: siloflow operator grant {name} ...")


_TENANT = click.option("--tenant", "slug", help="The tenant the grant is about.")
_ALL = click.option("--all", "all_tenants", is_flag=True, help="Every tenant (and the server).")


@operator.command("grant")
@click.argument("name")
@_TENANT
@_ALL
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@pass_app
@audited("operator.grant")
def grant(app: AppContext, name: str, slug: str | None, all_tenants: bool, role: str) -> None:
    """Give an operator a role on one tenant, or on all of them (replacing the role they had
    there)."""
    scope = _scope(slug, all_tenants)
    done = run(operators.grant(app.settings, name, scope, Role(role)))
    click.echo(f"{done}: {name} is {role} of {scope or 'every tenant'}")


@operator.command("revoke-grant")
@click.argument("name")
@_TENANT
@_ALL
@pass_app
@audited("operator.revoke-grant")
def revoke_grant(app: AppContext, name: str, slug: str | None, all_tenants: bool) -> None:
    """Take an operator's grant on a tenant (or on all tenants) away."""
    scope = _scope(slug, all_tenants)
    if not run(operators.revoke_grant(app.settings, name, scope)):
        raise click.ClickException(f"{name} has no grant on {scope or 'every tenant'}")
    click.echo(f"revoked: {name} on {scope or 'every tenant'}")


@operator.group("token")
def token() -> None:
    """An operator's API tokens."""


@token.command("issue")
@click.argument("name")
@click.option("--ttl", default="30d", show_default=True, help="How long it is valid (e.g. 8h).")
@click.option("--note", help="Free text (where it is used).")
@json_option
@pass_app
@audited("operator.token.issue")
def issue(app: AppContext, name: str, ttl: str, note: str | None, as_json: bool) -> None:
    """Issue an API token. It is printed once and only its hash is kept: copy it now."""
    try:
        lifetime = parse_duration(ttl)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    issued = run(operators.issue_token(app.settings, name, lifetime, note))
    if as_json:
        print_json(
            {
                "token": issued.token,
                "id": str(issued.id),
                "operator": issued.operator,
                "expires_at": issued.expires_at.isoformat(),
            }
        )
        return
    click.echo(issued.token)
    click.echo(
        f"(token {issued.id} of {name}, valid until {issued.expires_at:%Y-%m-%d %H:%M} UTC; "
        "shown once)",
        err=True,
    )


@token.command("revoke")
@click.argument("token_id", type=click.UUID)
@pass_app
@audited("operator.token.revoke")
def revoke(app: AppContext, token_id: uuid.UUID) -> None:
    """Revoke one API token (by the id `operator list` shows)."""
    if not run(operators.revoke_token(app.settings, token_id)):
        raise click.ClickException(f"no unrevoked token {token_id}")
    click.echo(f"revoked token {token_id}")


@operator.command("disable")
@click.argument("name")
@pass_app
@audited("operator.disable")
def disable(app: AppContext, name: str) -> None:
    """Disable an operator: every token of theirs is revoked and refused."""
    if not run(operators.disable(app.settings, name)):
        raise click.ClickException(f"operator {name} is disabled already")
    click.echo(f"operator {name} disabled; their tokens are revoked")


@operator.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Every operator with their grants and tokens (never a token itself)."""
    views = run(operators.list_operators(app.settings))
    if as_json:
        print_json([v.as_json() for v in views])
        return
    print_table(
        None,
        ("operator", "status", "grants", "tokens (live/all)", "created by"),
        [
            (
                v.name,
                v.status,
                ", ".join(f"{role} of {scope}" for scope, role in sorted(v.grants.items())) or "-",
                f"{sum(not t.revoked for t in v.tokens)}/{len(v.tokens)}",
                v.created_by,
            )
            for v in views
        ],
    )
