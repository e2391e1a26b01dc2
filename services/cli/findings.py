"""`siloflow findings`: which of a tenant's hosts are affected by which CVE, and which version
fixes it."""

from __future__ import annotations

import uuid

import click

from services.cli.common import AppContext, json_option, pass_app, print_json, print_table, run
from services.ops import findings as ops


@click.command()
@click.option("--tenant", "slug", required=True, help="The tenant whose findings to show.")
@click.option("--host", type=click.UUID, help="Only this host.")
@click.option("--cve", help="Only this CVE, e.g. CVE-2024-1234.")
@click.option("--urgency", help="Only this urgency (low, medium, high, ...).")
@click.option("--resolved", is_flag=True, help="Include findings a later snapshot resolved.")
@json_option
@pass_app
def findings(
    app: AppContext,
    slug: str,
    host: uuid.UUID | None,
    cve: str | None,
    urgency: str | None,
    resolved: bool,
    as_json: bool,
) -> None:
    """The tenant's open findings (with --resolved, their history too), read through the
    tenant's own short-lived login."""
    rows, coverage = run(
        ops.list_findings(
            app.settings, slug, host=host, cve=cve, urgency=urgency, resolved=resolved
        )
    )
    said = (
        f"{coverage.evaluated} host(s) evaluated against catalog revision "
        f"{coverage.catalog_revision or '-'}"
    )
    if coverage.unknown_release:
        said += (
            f"; {coverage.unknown_release} of them with no known Debian release (no findings "
            "for those until a system_info names one)"
        )
    if coverage.unparsed_versions:
        said += f"; {coverage.unparsed_versions} package version(s) did not parse"
    if as_json:
        print_json([row.as_json() for row in rows])
        click.echo(said, err=True)
        return
    print_table(
        f"findings of {slug}",
        ("host", "package", "version", "cve", "fixed in", "urgency", "status", "first seen"),
        [
            (
                str(r.host_id),
                r.package,
                r.version,
                r.cve_id,
                r.fixed_version or "(not yet)",
                r.urgency,
                r.status,
                r.first_seen.isoformat(timespec="seconds"),
            )
            for r in rows
        ],
    )
    click.echo(said)
