"""`siloflow broker ...`: the broker identities bootstrap created (see docs/credentials.md)."""

from __future__ import annotations

import click

from services.cli.common import AppContext, json_option, pass_app, print_json
from services.core.broker.users import agent_url, user_of
from services.core.errors import SettingsError


@click.group()
def broker() -> None:
    """RabbitMQ users and the URLs to connect with."""


@broker.command("agent-url")
@json_option
@pass_app
def agent_url_command(app: AppContext, as_json: bool) -> None:
    """Print the AMQP URL agents publish with (it holds the agent user's password).

    Every agent shares this one user: it may publish reports and registrations to the agents'
    exchange and read its own replies, nothing else. Reports are signed, so sharing it lets no
    agent write for another host."""
    try:
        url = agent_url(app.settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"url": url, "user": user_of(url)})
    else:
        click.echo(url)
