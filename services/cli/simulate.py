"""`siloflow simulate`: a fleet of simulated hosts reporting across tenants."""

from __future__ import annotations

import click

from services.agent.simulate import Outcome, bind_fleet, enroll_fleet
from services.agent.simulate import simulate as simulate_fleet
from services.cli.common import AppContext, json_option, pass_app, print_json, run
from services.core.errors import InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.ops.fleet import FleetOperator
from services.ops.tenants import registry_connection


@click.command()
@click.option("--tenants", help="Comma-separated tenant slugs (default: every active tenant).")
@click.option(
    "--hosts",
    "hosts_per_tenant",
    type=click.IntRange(1, 1_000_000),
    default=50,
    show_default=True,
    help="Simulated hosts per tenant.",
)
@click.option("--reports", type=click.IntRange(1), help="How many reports in all.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    help="Reports per second (default: as fast as confirmed).",
)
@click.option(
    "--duration", type=click.FloatRange(min=0.1), help="Seconds to publish for (with --rate)."
)
@click.option("--no-misbehave", is_flag=True, help="Leave out the misbehaving publishers.")
@click.option(
    "--enroll",
    is_flag=True,
    help="Enroll new hosts with enrollment tokens, as agents do (needs `siloflow run ingest`), "
    "instead of binding a fixed fleet by hand.",
)
@json_option
@pass_app
def simulate(
    app: AppContext,
    tenants: str | None,
    hosts_per_tenant: int,
    reports: int | None,
    rate: float | None,
    duration: float | None,
    no_misbehave: bool,
    enroll: bool,
    as_json: bool,
) -> None:
    """Publish a realistic mix of reports from simulated hosts, as agents would."""
    if duration is not None and rate is None:
        raise click.UsageError("--duration needs --rate (reports per second)")
    if duration is not None and reports is not None:
        raise click.UsageError("give --reports or --rate with --duration, not both")
    total = reports or (int(rate * duration) if rate and duration else 1000)

    async def go() -> Outcome:
        async with registry_connection(app.settings) as conn:
            active = [t.slug for t in await registry.active_tenants(conn)]
        chosen = [s.strip() for s in tenants.split(",") if s.strip()] if tenants else active
        for slug in chosen:
            if slug not in active:
                raise TenantNotFound(slug)
        if not chosen:
            raise InvalidArgument("no active tenant to simulate: create one first")
        if enroll:
            fleet = await enroll_fleet(
                app.settings, FleetOperator(app.settings), chosen, hosts_per_tenant
            )
        else:
            fleet = await bind_fleet(
                app.settings, FleetOperator(app.settings), chosen, hosts_per_tenant
            )
        return await simulate_fleet(
            app.settings,
            fleet,
            reports=total,
            rate_per_s=rate,
            misbehave=not no_misbehave,
            progress=not as_json,
        )

    outcome = run(go())
    if as_json:
        print_json(
            {
                "published": dict(outcome.published),
                "per_tenant": dict(outcome.per_tenant),
                "misbehaving": outcome.misbehaving,
            }
        )
        return
    click.echo(
        f"published {sum(outcome.published.values())} reports: "
        + ", ".join(f"{k} {v}" for k, v in outcome.published.most_common())
    )
    for slug, count in sorted(outcome.per_tenant.items()):
        click.echo(f"  tenant {slug}: {count}")
    for line in outcome.misbehaving:
        click.echo(f"  misbehaving: {line}")
