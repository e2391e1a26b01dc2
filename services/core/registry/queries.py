"""Queries on the registry partition. Functions take a connection so the caller decides the
transaction; none of them commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.domain import MoveStep, TenantStatus
from services.core.registry.models import (
    host_tenant,
    placements,
    tenant_moves,
    tenant_schema,
    tenants,
)
from services.core.routing import Binding


@dataclass(frozen=True)
class Placement:
    """A PostgreSQL server that holds tenant databases."""

    name: str
    host: str
    port: int
    note: str | None = None
    draining: bool = False


@dataclass(frozen=True)
class Move:
    """A tenant's move to another placement, as far as it got."""

    source: str
    target: str
    step: MoveStep
    keep_source: bool
    progress: str | None
    started_at: datetime

    def as_json(self) -> dict[str, object]:
        """The move as `tenant list --json` shows it."""
        return {
            "from": self.source,
            "to": self.target,
            "step": self.step,
            "progress": self.progress,
            "started_at": self.started_at.isoformat(),
        }


@dataclass(frozen=True)
class TenantRecord:
    """A tenant as the registry knows it, with its placement resolved (None when it has none)."""

    id: uuid.UUID
    slug: str
    name: str
    status: TenantStatus
    db_name: str
    placement: Placement | None
    schema_revision: str | None
    migrated_at: datetime | None
    last_error: str | None
    created_at: datetime
    move: Move | None = None

    @property
    def paused(self) -> bool:
        """Whether a move holds its reports in its queue (nothing may commit them now)."""
        return self.move is not None and self.move.step.paused

    def as_json(self) -> dict[str, object]:
        """The tenant as `tenant list --json` shows it."""
        return {
            "id": str(self.id),
            "slug": self.slug,
            "name": self.name,
            "status": self.status,
            "database": self.db_name,
            "placement": None
            if self.placement is None
            else {
                "name": self.placement.name,
                "host": self.placement.host,
                "port": self.placement.port,
            },
            "schema_revision": self.schema_revision,
            "migrated_at": self.migrated_at.isoformat() if self.migrated_at else None,
            "last_migration_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "move": None if self.move is None else self.move.as_json(),
        }


def _tenant_query() -> Select[Any]:
    return (
        select(
            tenants.c.id,
            tenants.c.slug,
            tenants.c.name,
            tenants.c.status,
            tenants.c.db_name,
            tenants.c.created_at,
            placements.c.name.label("placement_name"),
            placements.c.host,
            placements.c.port,
            placements.c.note,
            tenant_schema.c.revision,
            tenant_schema.c.migrated_at,
            tenant_schema.c.last_error,
            tenant_moves.c.source.label("move_source"),
            tenant_moves.c.target.label("move_target"),
            tenant_moves.c.step.label("move_step"),
            tenant_moves.c.keep_source.label("move_keep_source"),
            tenant_moves.c.progress.label("move_progress"),
            tenant_moves.c.started_at.label("move_started_at"),
        )
        .select_from(tenants)
        .outerjoin(placements, placements.c.name == tenants.c.placement)
        .outerjoin(tenant_schema, tenant_schema.c.tenant_id == tenants.c.id)
        .outerjoin(tenant_moves, tenant_moves.c.tenant_id == tenants.c.id)
    )


def _record(row: Row[Any]) -> TenantRecord:
    r = row._mapping
    placement = (
        None
        if r["placement_name"] is None
        else Placement(r["placement_name"], r["host"], r["port"], r["note"])
    )
    return TenantRecord(
        id=r["id"],
        slug=r["slug"],
        name=r["name"],
        status=TenantStatus(r["status"]),
        db_name=r["db_name"],
        placement=placement,
        schema_revision=r["revision"],
        migrated_at=r["migrated_at"],
        last_error=r["last_error"],
        created_at=r["created_at"],
        move=None
        if r["move_step"] is None
        else Move(
            r["move_source"],
            r["move_target"],
            MoveStep(r["move_step"]),
            r["move_keep_source"],
            r["move_progress"],
            r["move_started_at"],
        ),
    )


# -- placements ----------------------------------------------------------------------------------


# -- tenants -------------------------------------------------------------------------------------


async def get_tenant(conn: AsyncConnection, slug: str) -> TenantRecord | None:
    """The tenant of this slug, if any."""
    row = (await conn.execute(_tenant_query().where(tenants.c.slug == slug))).first()
    return None if row is None else _record(row)


async def get_tenant_by_id(conn: AsyncConnection, tenant_id: uuid.UUID) -> TenantRecord | None:
    """The tenant of this id, if any."""
    row = (await conn.execute(_tenant_query().where(tenants.c.id == tenant_id))).first()
    return None if row is None else _record(row)


async def list_tenants(
    conn: AsyncConnection, *, statuses: tuple[TenantStatus, ...] = ()
) -> list[TenantRecord]:
    """Every tenant (of these statuses, if given), by slug."""
    query = _tenant_query().order_by(tenants.c.slug)
    if statuses:
        query = query.where(tenants.c.status.in_(statuses))
    return [_record(row) for row in await conn.execute(query)]


async def active_tenants(conn: AsyncConnection) -> list[TenantRecord]:
    """The tenants that are routed to (each has its queue), moving ones included."""
    return await list_tenants(conn, statuses=(TenantStatus.ACTIVE,))


async def committable_tenants(conn: AsyncConnection) -> list[TenantRecord]:
    """The active tenants whose databases may be written now: all but those a move holds (their
    reports wait in their queues until it switches them)."""
    return [t for t in await active_tenants(conn) if not t.paused]


async def binding_of(
    conn: AsyncConnection, host_id: uuid.UUID
) -> tuple[Binding | None, TenantRecord | None]:
    """A host's binding (a revoked one too: the rule says why it takes nothing) and the tenant
    it names (None for either that does not exist)."""
    query = select(
        host_tenant.c.tenant_id, host_tenant.c.revoked_at.is_not(None).label("revoked")
    ).where(host_tenant.c.host_id == host_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return None, None
    binding = Binding(host_id, row.tenant_id, row.revoked)
    return binding, await get_tenant_by_id(conn, row.tenant_id)


# -- host bindings -------------------------------------------------------------------------------
