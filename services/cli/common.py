"""What every command shares: lazy settings, running a coroutine, turning siloflow's errors into
clear messages and exit codes (2: the request was wrong and nothing changed; 1: it failed), and
printing tables or JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop
from rich.console import Console
from rich.table import Table

from services.core.errors import (
    InvalidArgument,
    NotInSingleTenantMode,
    SettingsError,
    SiloflowError,
)
from services.core.logs import configure_logging
from services.core.settings import Settings, load_settings

T = TypeVar("T")


class AppContext:
    """Holds the `--config` path; settings are read on first use so `--help` never needs them."""

    def __init__(self, config_file: Path | None) -> None:
        self.config_file = config_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings, read on first use; a bad one stops the command with its name."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
            configure_logging(self._settings)
        return self._settings


pass_app = click.make_pass_decorator(AppContext)


def run(coro: Coroutine[Any, Any, T], *, event_loop: str = "asyncio") -> T:
    """Run a command's coroutine (on uvloop if asked: the services), mapping siloflow errors to
    messages and exit codes."""
    factory = uvloop.new_event_loop if event_loop == "uvloop" else None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    except (InvalidArgument, NotInSingleTenantMode) as exc:
        raise click.UsageError(str(exc)) from None
    except SiloflowError as exc:
        raise click.ClickException(str(exc)) from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def print_json(value: object) -> None:
    """Print a value as indented JSON."""
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def print_table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    """Print rows as a table (never cut to the terminal's width when piped)."""
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console().print(table)


def console() -> Console:
    """Standard output; piped output is read by people too (and by grep), so it is never cut to
    80 columns there."""
    terminal = Console(file=sys.stdout)
    return terminal if terminal.is_terminal else Console(file=sys.stdout, width=1000)
