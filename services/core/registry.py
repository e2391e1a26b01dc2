"""Queries on the registry partition. Functions take a connection so the caller decides the
transaction; none of them commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.models.registry import host_tenant, placements, tenant_schema, tenants


@dataclass(frozen=True)
class Placement:
    """A PostgreSQL server that holds tenant databases."""

    name: str
    host: str
    port: int
    note: str | None = None


@dataclass(frozen=True)
class TenantRecord:
    """A tenant as the registry knows it, with its placement resolved (None when it has none)."""

    id: uuid.UUID
    slug: str
    name: str
    status: str
    db_name: str
    placement: Placement | None
    schema_revision: str | None
    migrated_at: datetime | None
    last_error: str | None
    created_at: datetime

    def as_json(self) -> dict[str, object]:
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
        )
        .select_from(tenants)
        .outerjoin(placements, placements.c.name == tenants.c.placement)
        .outerjoin(tenant_schema, tenant_schema.c.tenant_id == tenants.c.id)
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
        status=r["status"],
        db_name=r["db_name"],
        placement=placement,
        schema_revision=r["revision"],
        migrated_at=r["migrated_at"],
        last_error=r["last_error"],
        created_at=r["created_at"],
    )


# -- placements ----------------------------------------------------------------------------------


async def ensure_placement(conn: AsyncConnection, placement: Placement) -> None:
    """Record a placement if it is not there yet (an existing one is left as it is)."""
    await conn.execute(
        pg_insert(placements)
        .values(name=placement.name, host=placement.host, port=placement.port, note=placement.note)
        .on_conflict_do_nothing(index_elements=["name"])
    )


async def get_placement(conn: AsyncConnection, name: str) -> Placement | None:
    row = (await conn.execute(select(placements).where(placements.c.name == name))).first()
    return None if row is None else Placement(row.name, row.host, row.port, row.note)


async def list_placements(conn: AsyncConnection) -> list[Placement]:
    rows = await conn.execute(select(placements).order_by(placements.c.name))
    return [Placement(r.name, r.host, r.port, r.note) for r in rows]


# -- tenants -------------------------------------------------------------------------------------


async def get_tenant(conn: AsyncConnection, slug: str) -> TenantRecord | None:
    row = (await conn.execute(_tenant_query().where(tenants.c.slug == slug))).first()
    return None if row is None else _record(row)


async def get_tenant_by_id(conn: AsyncConnection, tenant_id: uuid.UUID) -> TenantRecord | None:
    row = (await conn.execute(_tenant_query().where(tenants.c.id == tenant_id))).first()
    return None if row is None else _record(row)


async def list_tenants(
    conn: AsyncConnection, *, statuses: tuple[str, ...] = ()
) -> list[TenantRecord]:
    query = _tenant_query().order_by(tenants.c.slug)
    if statuses:
        query = query.where(tenants.c.status.in_(statuses))
    return [_record(row) for row in await conn.execute(query)]


async def tenant_of_host(conn: AsyncConnection, host_id: uuid.UUID) -> TenantRecord | None:
    """The tenant a host is bound to (revoked bindings count as none)."""
    query = (
        _tenant_query()
        .join(host_tenant, host_tenant.c.tenant_id == tenants.c.id)
        .where(host_tenant.c.host_id == host_id, host_tenant.c.revoked_at.is_(None))
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _record(row)


async def insert_tenant(
    conn: AsyncConnection, *, slug: str, name: str, placement: str | None, db_name: str
) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    await conn.execute(
        insert(tenants).values(
            id=tenant_id,
            slug=slug,
            name=name,
            status="provisioning",
            placement=placement,
            db_name=db_name,
        )
    )
    await conn.execute(insert(tenant_schema).values(tenant_id=tenant_id))
    return tenant_id


async def set_status(conn: AsyncConnection, tenant_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        update(tenants)
        .where(tenants.c.id == tenant_id)
        .values(status=status, updated_at=func.now())
    )


async def record_migration(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, revision: str | None, error: str | None
) -> None:
    """Record a migration attempt: the revision reached, or the error (keeping the old revision)."""
    values: dict[str, object] = {"last_attempt_at": func.now(), "last_error": error}
    if error is None:
        values.update(revision=revision, migrated_at=func.now())
    statement = pg_insert(tenant_schema).values(tenant_id=tenant_id, **values)
    await conn.execute(statement.on_conflict_do_update(index_elements=["tenant_id"], set_=values))


# -- host bindings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """A host's membership in a tenant."""

    host_id: uuid.UUID
    tenant_slug: str
    bound_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "host_id": str(self.host_id),
            "tenant": self.tenant_slug,
            "bound_at": self.bound_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _binding_query() -> Select[Any]:
    return select(
        host_tenant.c.host_id, tenants.c.slug, host_tenant.c.bound_at, host_tenant.c.revoked_at
    ).join(tenants, tenants.c.id == host_tenant.c.tenant_id)


async def get_binding(conn: AsyncConnection, host_id: uuid.UUID) -> Binding | None:
    row = (await conn.execute(_binding_query().where(host_tenant.c.host_id == host_id))).first()
    return None if row is None else Binding(*row)


async def list_bindings(conn: AsyncConnection, *, tenant_slug: str | None = None) -> list[Binding]:
    query = _binding_query().order_by(tenants.c.slug, host_tenant.c.bound_at)
    if tenant_slug is not None:
        query = query.where(tenants.c.slug == tenant_slug)
    return [Binding(*row) for row in await conn.execute(query)]


async def bind_host(conn: AsyncConnection, host_id: uuid.UUID, tenant_id: uuid.UUID) -> bool:
    """Bind an unbound host; returns False (and changes nothing) if it is bound already."""
    result = await conn.execute(
        pg_insert(host_tenant)
        .values(host_id=host_id, tenant_id=tenant_id)
        .on_conflict_do_nothing(index_elements=["host_id"])
        .returning(host_tenant.c.host_id)
    )
    return result.first() is not None


async def move_host(conn: AsyncConnection, host_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
    """Point an existing binding at another tenant (and clear any revocation)."""
    await conn.execute(
        update(host_tenant)
        .where(host_tenant.c.host_id == host_id)
        .values(tenant_id=tenant_id, bound_at=func.now(), revoked_at=None)
    )


async def revoke_host(conn: AsyncConnection, host_id: uuid.UUID) -> bool:
    """Mark a binding revoked (kept, so the router can say `host-revoked`)."""
    result = await conn.execute(
        update(host_tenant)
        .where(host_tenant.c.host_id == host_id, host_tenant.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(host_tenant.c.host_id)
    )
    return result.first() is not None


async def unbind_host(conn: AsyncConnection, host_id: uuid.UUID) -> bool:
    result = await conn.execute(
        delete(host_tenant).where(host_tenant.c.host_id == host_id).returning(host_tenant.c.host_id)
    )
    return result.first() is not None


async def delete_tenant(conn: AsyncConnection, tenant_id: uuid.UUID) -> None:
    """Remove the tenant's registry rows (bindings, tokens and schema rows cascade)."""
    await conn.execute(delete(tenants).where(tenants.c.id == tenant_id))
