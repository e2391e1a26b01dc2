"""The CLI's audit trail: `@audited` records what a state-changing command did (who: the local
user, the trust root; what; on which tenant; how it ended), and `siloflow audit` reads the trail.
Every command is either audited or named read-only in tests/unit/test_cli_audit.py."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import click

from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.audit import Entry, Outcome
from services.core.errors import InvalidArgument
from services.core.names import validate_slug
from services.ops import audit as audit_ops
from services.ops.operators import cli_user

F = TypeVar("F", bound=Callable[..., Any])

# Never kept: secrets (DSNs carry passwords) and what only shapes the output.
_UNKEPT = frozenset({"admin_dsn", "admin_dsns", "token", "as_json", "yes"})


def _plain(value: object) -> object:
    """A JSON value for an argument."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, uuid.UUID | Path | date | datetime | Enum):
        return str(value)
    return repr(value)


def arguments(kwargs: dict[str, Any]) -> dict[str, object]:
    """What a command was asked, for the entry: set options and arguments, no secrets."""
    return {
        name: _plain(value)
        for name, value in kwargs.items()
        if name not in _UNKEPT and value not in (None, False, ())
    }


def audited(
    action: str, *, tenant: str | None = None, unless: tuple[str, ...] = ()
) -> Callable[[F], F]:
    """Record the command's act once it ends: `ok`, or `failed` with the error's line. `tenant`
    names the parameter holding the tenant's slug; any flag in `unless` makes it a read."""

    def wrap(command: F) -> F:
        @functools.wraps(command)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if any(kwargs.get(flag) for flag in unless):
                return command(*args, **kwargs)
            detail: dict[str, object] = {"args": arguments(kwargs)}
            try:
                result = command(*args, **kwargs)
            except SystemExit as exc:
                outcome = Outcome.OK if exc.code in (0, None) else Outcome.FAILED
                _keep(action, outcome, kwargs.get(tenant) if tenant else None, detail)
                raise
            except Exception as exc:
                message = exc.format_message() if isinstance(exc, click.ClickException) else ""
                detail["error"] = (message or f"{type(exc).__name__}: {exc}")[:1000]
                _keep(action, Outcome.FAILED, kwargs.get(tenant) if tenant else None, detail)
                raise
            _keep(action, Outcome.OK, kwargs.get(tenant) if tenant else None, detail)
            return result

        recorded.__siloflow_audited__ = action  # type: ignore[attr-defined]
        return recorded  # type: ignore[return-value]

    return wrap


def _keep(action: str, outcome: Outcome, slug: object, detail: dict[str, object]) -> None:
    """Keep the entry. A trail that cannot take a done act says so on stderr (the act is done,
    its exit status stays); for a failed act, its own error line is what is said."""
    app = click.get_current_context().find_object(AppContext)
    if app is None:
        return
    entry = Entry(
        actor=cli_user(),
        action=action,
        outcome=outcome,
        tenant=slug if isinstance(slug, str) else None,
        detail=detail,
    )
    try:
        run(audit_ops.record(app.settings, entry))
    except Exception as exc:
        if outcome is Outcome.FAILED:
            # The act's own error is the one line said: most often the trail failed for the
            # same reason (the registry out of reach), and nothing of the act was done.
            return
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"warning: the audit trail did not take this act: {message}", err=True)


@click.command("audit")
@click.option("--tenant", "slug", help="This tenant's trail (its silo's, and the registry's).")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="At most this many entries, newest first.",
)
@json_option
@pass_app
def audit(app: AppContext, slug: str | None, limit: int, as_json: bool) -> None:
    """Who did what, on which tenant, and how it ended (newest first). A deleted tenant's
    trail ends with its deletion, kept in the registry."""
    if slug is not None:
        try:
            validate_slug(slug)
        except InvalidArgument as exc:
            raise click.BadParameter(str(exc), param_hint="--tenant") from None
    found = run(audit_ops.trail(app.settings, slug, limit=limit))
    if as_json:
        print_json([r.as_json() for r in found])
        return
    print_table(
        None,
        ("at", "actor", "action", "tenant", "outcome", "detail"),
        [
            (
                r.at.isoformat(timespec="seconds"),
                r.entry.actor,
                r.entry.action,
                r.entry.tenant or "-",
                r.entry.outcome,
                r.entry.detail.get("error") or r.entry.detail.get("args") or "",
            )
            for r in found
        ],
    )
