"""What every command shares: lazy settings, running a coroutine, turning siloflow's errors into
clear messages and exit codes (2: the request was wrong and nothing changed; 1: it failed), and
printing tables or JSON."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop
from rich.console import Console
from rich.table import Table

from services.core.diagnosis import explain
from services.core.errors import (
    BrokerUnavailable,
    CredentialsUnavailable,
    DatabaseUnavailable,
    InvalidArgument,
    ManagementError,
    NotInSingleTenantMode,
    OpenBaoUnavailable,
    ServiceStopped,
    SettingsError,
    SiloflowError,
)
from services.core.logs import configure_logging
from services.core.settings import Settings, load_settings

T = TypeVar("T")
_LEVEL_ORDER = ["debug", "info", "warning", "error"]


class AppContext:
    """Holds the `--config` path and how much to log; settings are read on first use so
    `--help` never needs them.

    A command prints for people on stdout; its logs go to stderr, and only at warning and above
    unless `verbose` (then at SILOFLOW_LOG_LEVEL). The services (`serving`, set by `siloflow
    run`) log at SILOFLOW_LOG_LEVEL always: their logs are their output."""

    def __init__(self, config_file: Path | None, verbose: bool = False) -> None:
        self.config_file = config_file
        self.verbose = verbose
        self.serving = False
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings, read on first use; a bad one stops the command with its name."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except SettingsError as exc:
                raise Misconfigured(str(exc)) from None
            if self.serving or self.verbose:
                configure_logging(self._settings)
            else:
                level = max(("warning", self._settings.log_level), key=_LEVEL_ORDER.index)
                configure_logging(
                    self._settings.model_copy(update={"log_level": level}), quiet_libraries=True
                )
            _loaded[:] = [self._settings]
        return self._settings


# The settings the command read, for explaining a failure after it (None before they are read).
_loaded: list[Settings] = []

# siloflow's own errors that report a server out of reach: the one-line explanation of what is
# behind them names the setting, where their own message may not.
_UNREACHABLE = (
    BrokerUnavailable,
    CredentialsUnavailable,
    DatabaseUnavailable,
    ManagementError,
    OpenBaoUnavailable,
)


def one_line(exc: BaseException) -> str | None:
    """The operator's line for a failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, SiloflowError) and not isinstance(exc, _UNREACHABLE):
        return str(exc)
    try:
        settings = _loaded[0] if _loaded else load_settings()
    except SettingsError:
        return str(exc) if isinstance(exc, SiloflowError) else None
    line = explain(exc, settings)
    if line is None and isinstance(exc, SiloflowError):
        return str(exc)
    return line


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
    except SettingsError as exc:
        raise Misconfigured(str(exc)) from None
    except ServiceStopped:
        sys.exit(0)  # told to stop while it waited: nothing was done, nothing to say
    except Exception as exc:
        line = one_line(exc)
        if line is None:
            raise
        raise click.ClickException(line) from None


class Stopped(click.ClickException):
    """A command told to stop (SIGTERM, SIGINT) that undid what it had made first. Exit code
    143, a process ended by SIGTERM's."""

    exit_code = 143


async def undone_on_signals(
    coro: Coroutine[Any, Any, T], *, after: str = "what it had made is removed"
) -> T:
    """Run `coro`; SIGTERM or SIGINT (`timeout`, a CI's cancel, ^C) cancel it, so its `finally`
    blocks undo what it made (a bench's servers, vhost, users and processes; a demo's services)
    as its own end does, and `after` says so. A second signal while it cleans up is ignored:
    the cleanup is the point."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    got: list[signal.Signals] = []

    def stop(which: signal.Signals) -> None:
        if not got:
            got.append(which)
            click.echo(f"{which.name}: stopping", err=True)
            task.cancel()

    for which in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(which, stop, which)
    try:
        return await coro
    except asyncio.CancelledError:
        if got:
            raise Stopped(f"stopped by {got[0].name}; {after}") from None
        raise
    finally:
        for which in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(which)


class Misconfigured(click.ClickException):
    """A setting (or a file one names) is wrong: waiting cannot help. Exit code 78 (sysexits'
    EX_CONFIG), so a supervisor stops instead of restarting the service in a loop."""

    exit_code = 78


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
