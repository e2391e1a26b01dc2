"""`siloflow dlq ...`: what is in the dead-letter queues, and sending it back once the cause is
fixed. Safe at 3 a.m.: listing changes nothing, replay and purge say what they will do first."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
from rich.progress import Progress

from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core import dead_letters as dlq
from services.core.durations import parse_duration
from services.core.errors import InvalidArgument
from services.core.names import DLQS, Names


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every dlq command filters letters with."""
    options = [
        click.option(
            "--queue",
            "queues",
            type=click.Choice(DLQS),
            multiple=True,
            help="Which dead-letter queue (default: all three).",
        ),
        click.option("--reason", help="Only this reason code, e.g. no-tenant-binding."),
        click.option("--host", help="Only this host id."),
        click.option("--tenant", help="Only this tenant's letters (failed ones carry it)."),
        click.option("--since", help="Only letters dead for at most this long, e.g. 2h."),
        click.option("--limit", type=click.IntRange(1), help="At most this many."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filters(
    queues: tuple[str, ...],
    reason: str | None,
    host: str | None,
    tenant: str | None,
    since: str | None,
    limit: int | None,
) -> dlq.Filters:
    try:
        window = parse_duration(since) if since else None
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    return dlq.Filters(
        queues=queues or DLQS, reason=reason, host=host, tenant=tenant, since=window, limit=limit
    )


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: inspect, replay, purge."""


@dlq_group.command("list")
@filter_options
@json_option
@pass_app
def list_(app: AppContext, /, as_json: bool, **options: Any) -> None:
    """What is there, with counts by reason. Changes nothing. A letter the queue holds more than
    once (a service died between dead-lettering a report and acknowledging it) is listed once,
    with its number of copies."""
    letters = run(dlq.browse(app.settings, _filters(**options)))
    counts = Counter((letter.queue, letter.reason) for letter in letters)
    if as_json:
        print_json(
            {
                "counts": [
                    {"queue": q, "reason": r, "count": n} for (q, r), n in sorted(counts.items())
                ],
                "letters": [letter.as_json() for letter in letters],
            }
        )
        return
    print_table(
        "by reason",
        ("queue", "reason", "count"),
        [(q, r, n) for (q, r), n in sorted(counts.items())],
    )
    print_table(
        "letters",
        (
            "queue",
            "message_id (or body digest)",
            "host",
            "kind",
            "reason",
            "stage",
            "dead at",
            "replays",
            "copies",
            "detail",
        ),
        [
            (
                x.queue,
                x.label,
                x.host_id,
                x.kind,
                x.reason,
                x.stage,
                x.dead_at.isoformat(timespec="seconds") if x.dead_at else None,
                x.replays,
                x.copies,
                (x.detail or "")[:80],
            )
            for x in letters
        ],
    )
    if doubled := [x for x in letters if x.copies > 1]:
        click.echo(
            f"{len(doubled)} letter(s) held more than once (a service stopped between "
            "dead-lettering and acknowledging): each is one report; replay sends it once and "
            "removes its copies"
        )


@dlq_group.command("show")
@click.argument("message_id")
@json_option
@pass_app
def show(app: AppContext, message_id: str, as_json: bool) -> None:
    """The letters with this message_id (or, for one without, the `sha256:<digits>` that `dlq
    list` names it by), with their headers and body."""
    digest = message_id.removeprefix("sha256:") if message_id.startswith("sha256:") else None
    letters = [
        x
        for x in run(dlq.browse(app.settings, dlq.Filters()))
        if (x.digest.startswith(digest) if digest else x.message_id == message_id)
    ]
    if not letters:
        raise click.ClickException(f"no dead letter with message_id {message_id}")
    if as_json:
        print_json([x.as_json(with_body=True) for x in letters])
        return
    for letter in letters:
        for key, value in letter.as_json(with_body=True).items():
            if key != "body":
                click.echo(f"{key:12} {value}")
        click.echo("body:")
        click.echo(letter.body.decode("utf-8", "replace"))


def _confirm(what: str, count: int, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{what} {count} letter(s): add --yes to confirm")
    click.confirm(f"{what} {count} letter(s)?", abort=True)


@dlq_group.command("replay")
@filter_options
@click.option("--dry-run", is_flag=True, help="Show what would go where; send nothing.")
@click.option("--rate", type=click.FloatRange(min=0.1), help="At most this many per second.")
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_app
@audited("dlq.replay", tenant="tenant", unless=("dry_run",))
def replay(
    app: AppContext, /, dry_run: bool, rate: float | None, yes: bool, **options: Any
) -> None:
    """Send matching letters back where they can succeed, keeping their message_id. A letter
    leaves its queue only once its new home confirmed it; one that fails again comes back with
    its new reason."""
    filters = _filters(**options)
    letters = run(dlq.browse(app.settings, filters))
    if dry_run or not letters:
        names = Names(app.settings.namespace)
        rows = []
        for letter in letters:
            exchange, key = dlq.destination(letter, names)
            rows.append(
                (
                    letter.queue,
                    letter.label,
                    letter.reason,
                    "nowhere: undecodable (purge it)"
                    if letter.undecodable is not None
                    else f"{exchange or '(default)'} -> {key}",
                )
            )
        print_table(
            "would replay" if dry_run else "nothing to replay",
            ("queue", "message_id", "reason", "to"),
            rows,
        )
        return
    _confirm("replay", len(letters), yes)
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("replaying", total=len(letters))
        summary = run(
            dlq.replay(
                app.settings, filters, rate_per_s=rate, progress=lambda _l, _o: bar.advance(task)
            )
        )
    copies = f" (and {summary.copies_removed} copies removed)" if summary.copies_removed else ""
    click.echo(
        f"replayed {summary.done}{copies}, skipped {summary.skipped}, failed {summary.failed}"
    )
    for failure in summary.failures:
        click.echo(f"  failed: {failure}", err=True)
    if summary.failed:
        raise click.ClickException(f"{summary.failed} letter(s) could not be replayed")


@dlq_group.command("purge")
@filter_options
@click.option("--yes", is_flag=True, help="Really drop them.")
@pass_app
@audited("dlq.purge", tenant="tenant")
def purge(app: AppContext, /, yes: bool, **options: Any) -> None:
    """Drop matching letters for good (for what is truly garbage)."""
    filters = _filters(**options)
    count = len(run(dlq.browse(app.settings, filters)))
    click.echo(f"{count} letter(s) match")
    if count == 0:
        return
    if not yes:
        raise click.UsageError(f"purging drops {count} letter(s) for good: add --yes to confirm")
    summary = run(dlq.purge(app.settings, filters))
    copies = f" (and {summary.copies_removed} copies)" if summary.copies_removed else ""
    click.echo(f"purged {summary.done}{copies}")
