"""`siloflow host ...`: bind hosts to tenants by hand (enrollment is the usual way)."""

from __future__ import annotations

import base64
import uuid

import click

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.errors import SettingsError
from services.core.hostkeys import load_keyring
from services.ops import bindings as hosts


@click.group()
def host() -> None:
    """Which tenant each host belongs to."""


@host.command("bind")
@click.argument("host_id", type=click.UUID)
@click.option("--tenant", "slug", required=True, help="The tenant the host belongs to.")
@click.option("--move", is_flag=True, help="Move a host bound to another tenant.")
@pass_app
@json_option
@audited("host.bind", tenant="slug")
def bind(app: AppContext, host_id: uuid.UUID, slug: str, move: bool, as_json: bool) -> None:
    """Bind HOST_ID (a UUID) to a tenant, and print the key the host signs its reports with
    (what enrollment hands an agent; give it to the host over a channel you trust)."""
    outcome = run(hosts.bind(app.settings, host_id, slug, move=move))
    try:
        keyring = load_keyring(app.settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    key = base64.b64encode(keyring.host_key(host_id)).decode()
    if as_json:
        print_json(
            {
                "host_id": str(host_id),
                "tenant": slug,
                "outcome": outcome,
                "host_key": key,
                "key_version": keyring.current,
            }
        )
        return
    click.echo(f"host {host_id} {outcome} (tenant {slug})")
    click.echo(f"host key (version {keyring.current}): {key}")


@host.command("revoke")
@click.argument("host_id", type=click.UUID)
@pass_app
@audited("host.revoke")
def revoke(app: AppContext, host_id: uuid.UUID) -> None:
    """Revoke a host: its reports are dead-lettered as host-revoked from now on."""
    run(hosts.revoke(app.settings, host_id))
    click.echo(f"host {host_id} revoked")


@host.command("unbind")
@click.argument("host_id", type=click.UUID)
@pass_app
@audited("host.unbind")
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
