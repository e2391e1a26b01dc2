"""What the API reads from a tenant's silo: plain queries on one tenant connection (the caller
opened it for that tenant, read-only), returning rows; no decision here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, Text, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.silo.models import (
    compliance_results,
    findings,
    host_hardware,
    host_packages,
    hosts,
)


async def host_page(
    conn: AsyncConnection, *, limit: int, after: uuid.UUID | None
) -> tuple[list[Any], uuid.UUID | None]:
    """Up to `limit` hosts in id order after `after`, and the `after` of the next page."""
    listed = (hosts.c.id, hosts.c.hostname, hosts.c.status, hosts.c.last_seen_at)
    query = select(*listed).order_by(hosts.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(hosts.c.id > after)
    # (id, hostname, status, last_seen_at) rows
    rows: list[Any] = list((await conn.execute(query)).all())
    more = len(rows) > limit
    return rows[:limit], rows[limit - 1].id if more else None


async def host(conn: AsyncConnection, host_id: uuid.UUID) -> Row[Any] | None:
    """One host's row, if the tenant has it."""
    return (await conn.execute(select(hosts).where(hosts.c.id == host_id))).first()


async def hardware(conn: AsyncConnection, host_id: uuid.UUID) -> Row[Any] | None:
    """The host's latest hardware report, if any."""
    return (
        await conn.execute(select(host_hardware).where(host_hardware.c.host_id == host_id))
    ).first()


async def packages_json(conn: AsyncConnection, host_id: uuid.UUID) -> str:
    """The host's latest packages snapshot as a JSON document, `{"manager", "sent_at",
    "packages": [{"name", "arch", "version", "source", "source_version"}, ...]}` by name and
    arch, rendered by PostgreSQL: ~2,000 rows become one value, never 2,000 Python objects."""
    p = host_packages.c
    entry = func.json_build_object(
        "name", p.name, "arch", p.arch, "version", p.version,
        "source", p.source, "source_version", p.source_version,
    )  # fmt: skip
    listed = func.coalesce(
        func.json_agg(aggregate_order_by(entry, p.name, p.arch)), literal_column("'[]'::json")
    )
    document = func.json_build_object(
        "manager", func.min(p.manager), "sent_at", func.max(p.sent_at), "packages", listed
    )
    query = select(cast(document, Text)).where(p.host_id == host_id)
    return str((await conn.execute(query)).scalar_one())


async def open_findings(
    conn: AsyncConnection,
    *,
    host_id: uuid.UUID | None,
    cve_id: str | None,
    urgency: str | None,
    limit: int,
    after: int | None,
) -> list[Row[Any]]:
    """Open findings (unresolved), filtered, in id order after `after`, at most `limit`."""
    query = select(findings).where(findings.c.resolved_at.is_(None))
    if host_id is not None:
        query = query.where(findings.c.host_id == host_id)
    if cve_id is not None:
        query = query.where(findings.c.cve_id == cve_id)
    if urgency is not None:
        query = query.where(findings.c.urgency == urgency)
    if after is not None:
        query = query.where(findings.c.id > after)
    return list((await conn.execute(query.order_by(findings.c.id).limit(limit))).all())


async def compliance(
    conn: AsyncConnection, *, host_id: uuid.UUID | None, status: str | None, limit: int
) -> list[Row[Any]]:
    """The latest compliance results, filtered, at most `limit`."""
    query = select(compliance_results)
    if host_id is not None:
        query = query.where(compliance_results.c.host_id == host_id)
    if status is not None:
        query = query.where(compliance_results.c.status == status)
    order = (
        compliance_results.c.host_id,
        compliance_results.c.benchmark_id,
        compliance_results.c.rule_id,
    )
    return list((await conn.execute(query.order_by(*order).limit(limit))).all())
