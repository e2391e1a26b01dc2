"""`siloflow catalog ...`: the vulnerability catalog in the shared partition."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.catalog import build, feed, store
from services.cli.audit import audited
from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.core.catalog.matcher import RELEASES

# A feed fetched from a URL is written to a temporary file as it arrives (bounded memory) and
# read from there; a feed larger than this is refused.
MAX_FEED_BYTES = 1024 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 300.0


@click.group()
def catalog() -> None:
    """The vulnerability catalog every tenant's packages are matched against."""


@contextmanager
def _opened(where: str) -> Iterator[IO[bytes]]:
    """A feed's bytes, from a file or downloaded from an http(s) URL."""
    if not where.startswith(("http://", "https://")):
        path = Path(where)
        if not path.is_file():
            raise click.BadParameter(f"{where}: no such file", param_hint="PATH|URL")
        with path.open("rb") as handle:
            yield handle
        return
    with tempfile.TemporaryFile() as spool:
        try:
            with httpx.stream("GET", where, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True) as r:
                r.raise_for_status()
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > MAX_FEED_BYTES:
                        raise click.ClickException(f"{where}: over {MAX_FEED_BYTES:,} bytes")
                    spool.write(chunk)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"could not fetch {where}: {exc}") from None
        spool.seek(0)
        yield spool


def _revision_fields(done: store.Imported) -> dict[str, object]:
    """What an import did to the catalog, as both import commands print it in JSON."""
    return {
        "revision": done.revision,
        "current": done.current,
        "advisories": done.total,
        "added": done.added,
        "changed": done.changed,
        "removed": done.removed,
        "digest": done.digest,
    }


@catalog.command("import")
@click.argument("where", metavar="PATH|URL")
@click.option(
    "--format",
    "format_",
    type=click.Choice([feed.FORMAT]),
    default=feed.FORMAT,
    show_default=True,
    help="The feed's format: the Debian Security Tracker's JSON.",
)
@click.option(
    "--release",
    "releases",
    multiple=True,
    type=click.Choice(sorted(RELEASES)),
    help="Only this Debian release (repeat for more; default: every release in the feed).",
)
@json_option
@pass_app
@audited("catalog.import")
def import_(
    app: AppContext, where: str, format_: str, releases: tuple[str, ...], as_json: bool
) -> None:
    """Import a feed as the catalog's next revision, in one transaction: readers see the old
    revision or the new one. The same data again makes no revision. A bad entry is refused,
    named, and the revision in force stays."""
    with _opened(where) as stream:
        done = run(
            store.import_feed(app.settings, stream, source=where, releases=set(releases) or None)
        )
    document = {
        **_revision_fields(done),
        "sources": done.counts.sources,
        "temporary_ids_skipped": done.counts.temporary_ids,
        "other_releases_skipped": done.counts.other_releases,
        "releases": sorted(done.counts.releases),
    }
    if as_json:
        print_json(document)
        return
    if done.revision is None:
        click.echo(
            f"no change: the feed holds the {done.total:,} advisories of revision "
            f"{done.current} already; no revision made"
        )
        return
    click.echo(
        f"revision {done.revision}: {done.total:,} advisories ({done.added:,} added, "
        f"{done.changed:,} changed, {done.removed:,} removed) for "
        f"{', '.join(sorted(done.counts.releases)) or 'no release'}"
    )
    if done.counts.temporary_ids:
        click.echo(f"({done.counts.temporary_ids:,} TEMP- entries without a CVE id skipped)")


@catalog.command("build")
@click.option(
    "--release", required=True, type=click.Choice(sorted(RELEASES)), help="The Debian release."
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Only this source package (repeat for more; default: every source the archive has).",
)
@click.option("--arch", default="amd64", show_default=True, help="The index of this architecture.")
@click.option("--mirror", help="The main archive (default: apt's, else deb.debian.org).")
@click.option("--security-mirror", help="The security archive (default: apt's, else Debian's).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="What earlier builds read (default: <state_dir>/catalog-archive).",
)
@click.option(
    "--keyring",
    type=click.Path(dir_okay=False, path_type=Path),
    default=build.DEFAULT_KEYRING,
    show_default=True,
    help="The keys the archive's signed indexes are checked against.",
)
@click.option(
    "--max-download-mib",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="No single download larger than this; an upload that needs one is skipped.",
)
@json_option
@pass_app
@audited("catalog.build")
def build_(
    app: AppContext,
    release: str,
    sources: tuple[str, ...],
    arch: str,
    mirror: str | None,
    security_mirror: str | None,
    cache_dir: Path | None,
    keyring: Path,
    max_download_mib: int,
    as_json: bool,
) -> None:
    """Build the catalog for a release from the Debian archive (the CVE ids each upload's
    changelog.Debian names) and import it as the next revision: for sites the security tracker
    cannot reach. Incremental: only uploads not read before are downloaded."""
    for name in sources:
        if not feed.SOURCE_NAME.match(name):
            raise click.BadParameter(
                f"{name!r} is not a Debian source package name", param_hint="--source"
            )
    apt = build.apt_mirrors(release)
    mirrors = build.Mirrors(
        (mirror or apt.main).rstrip("/"), (security_mirror or apt.security).rstrip("/")
    )
    settings = app.settings
    run(store.revisions(settings, limit=1))  # the shared database answers, before any download
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"reading {release} uploads", total=None)
        built = run(
            build.build(
                release,
                mirrors=mirrors,
                cache_dir=cache_dir or settings.state_dir / "catalog-archive",
                arch=arch,
                sources=frozenset(sources) or None,
                keyring=keyring,
                max_download_bytes=max_download_mib * 1024 * 1024,
                on_plan=lambda plan: bar.update(task, total=plan.to_read),
                on_upload=lambda upload, skipped: bar.advance(task),
            )
        )
    counts = feed.Counts(records=len(built.records), sources=built.sources, releases={release})
    done = run(
        store.import_records(
            settings,
            built.records,
            counts=counts,
            source=f"{build.FORMAT} {mirrors.main} {mirrors.security} {release}",
            format_=build.FORMAT,
            releases=lambda: {release},
            only_sources=sorted(sources) if sources else None,
            keep_sources=sorted(built.skipped),
        )
    )
    document = {
        **_revision_fields(done),
        "release": release,
        "mirrors": {"main": mirrors.main, "security": mirrors.security},
        "sources": built.sources,
        "records": len(built.records),
        "uploads_read": built.uploads_read,
        "uploads_cached": built.uploads_cached,
        "downloaded_bytes": built.downloaded_bytes,
        "skipped": built.skipped,
    }
    if as_json:
        print_json(document)
        return
    click.echo(
        f"{built.sources:,} sources: {built.uploads_read:,} uploads read "
        f"({built.downloaded_bytes / 1e6:,.1f} MB downloaded), {built.uploads_cached:,} read "
        f"before; {len(built.records):,} records"
    )
    for source, why in sorted(built.skipped.items()):
        click.echo(f"skipped {source}: {why} (its records stay as they were)")
    if done.revision is None:
        click.echo(f"no change: revision {done.current} holds these records already")
    else:
        click.echo(
            f"revision {done.revision}: {done.total:,} advisories in force ({done.added:,} "
            f"added, {done.changed:,} changed, {done.removed:,} removed)"
        )


@catalog.command("status")
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """The revision in force, its age, and the revisions before it."""
    found = run(store.revisions(app.settings))
    now = datetime.now(UTC)
    if as_json:
        print_json(
            {
                "revision": found[0].id if found else None,
                "age_s": (now - found[0].imported_at).total_seconds() if found else None,
                "revisions": [{**vars(r), "imported_at": r.imported_at.isoformat()} for r in found],
            }
        )
        return
    if not found:
        click.echo("no catalog imported yet: siloflow catalog import <feed>")
        return
    age = now - found[0].imported_at
    click.echo(f"revision {found[0].id}, imported {int(age.total_seconds() // 60)} min ago")
    print_table(
        "revisions",
        ("revision", "imported", "advisories", "added", "changed", "removed", "source"),
        [
            (
                r.id,
                r.imported_at.isoformat(timespec="seconds"),
                r.advisories,
                r.added,
                r.changed,
                r.removed,
                r.source,
            )
            for r in found
        ],
    )
