"""The registry rows operators' commands write, and read back: tenants (created, their status
changed, migrated, deleted), placements, host bindings. Services only read the registry
(`services.core.registry.queries`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.domain import TenantStatus
from services.core.registry.models import host_tenant, placements, tenant_schema, tenants
from services.core.registry.queries import Placement


async def ensure_placement(conn: AsyncConnection, placement: Placement) -> None:
    """Record a placement if it is not there yet (an existing one is left as it is)."""
    await conn.execute(
        pg_insert(placements)
        .values(name=placement.name, host=placement.host, port=placement.port, note=placement.note)
        .on_conflict_do_nothing(index_elements=["name"])
    )


async def get_placement(conn: AsyncConnection, name: str) -> Placement | None:
    """The placement of this name, if any."""
    row = (await conn.execute(select(placements).where(placements.c.name == name))).first()
    return None if row is None else Placement(row.name, row.host, row.port, row.note, row.draining)


async def list_placements(conn: AsyncConnection) -> list[Placement]:
    """Every placement, by name."""
    rows = await conn.execute(select(placements).order_by(placements.c.name))
    return [Placement(r.name, r.host, r.port, r.note, r.draining) for r in rows]


async def insert_tenant(
    conn: AsyncConnection, *, slug: str, name: str, placement: str | None, db_name: str
) -> uuid.UUID:
    """Record a new tenant, provisioning; returns its id."""
    tenant_id = uuid.uuid4()
    await conn.execute(
        insert(tenants).values(
            id=tenant_id,
            slug=slug,
            name=name,
            status=TenantStatus.PROVISIONING,
            placement=placement,
            db_name=db_name,
        )
    )
    await conn.execute(insert(tenant_schema).values(tenant_id=tenant_id))
    return tenant_id


async def set_status(conn: AsyncConnection, tenant_id: uuid.UUID, status: TenantStatus) -> None:
    """Change a tenant's status."""
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


@dataclass(frozen=True)
class Binding:
    """A host's membership in a tenant."""

    host_id: uuid.UUID
    tenant_slug: str
    bound_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, object]:
        """The binding as `host list --json` shows it."""
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
    """The host's binding, if any."""
    row = (await conn.execute(_binding_query().where(host_tenant.c.host_id == host_id))).first()
    return None if row is None else Binding(*row)


async def list_bindings(conn: AsyncConnection, *, tenant_slug: str | None = None) -> list[Binding]:
    """Every binding (of one tenant, if given), oldest first."""
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
    """Remove the host's binding; False if it had none."""
    result = await conn.execute(
        delete(host_tenant).where(host_tenant.c.host_id == host_id).returning(host_tenant.c.host_id)
    )
    return result.first() is not None


async def delete_tenant(conn: AsyncConnection, tenant_id: uuid.UUID) -> None:
    """Remove the tenant's registry rows (bindings, tokens and schema rows cascade)."""
    await conn.execute(delete(tenants).where(tenants.c.id == tenant_id))


async def set_draining(conn: AsyncConnection, name: str, draining: bool) -> None:
    """Mark a placement as being drained (it takes no new tenant), or not."""
    await conn.execute(
        update(placements).where(placements.c.name == name).values(draining=draining)
    )
