"""`/api/v1/tenants`: the tenants the caller has a grant on."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from services.api.deps import Authenticated, Registry, permitted
from services.core.access import Action, sees
from services.core.domain import TenantStatus
from services.core.registry import queries as registry

router = APIRouter(prefix="/tenants", tags=["tenants"])


class Tenant(BaseModel):
    """A tenant as an operator sees it."""

    model_config = ConfigDict(frozen=True)

    slug: str
    name: str
    status: TenantStatus
    placement: str | None
    moving: bool

    @classmethod
    def of(cls, record: registry.TenantRecord) -> Tenant:
        """The view of a registry record."""
        return cls(
            slug=record.slug,
            name=record.name,
            status=record.status,
            placement=record.placement.name if record.placement else None,
            moving=record.move is not None,
        )


@router.get("")
async def list_tenants(who: Authenticated, engine: Registry) -> list[Tenant]:
    """The tenants the caller has a grant on (every tenant for a grant on all)."""
    async with engine.connect() as conn:
        records = await registry.list_tenants(conn)
    return [Tenant.of(r) for r in records if sees(who.grants, r.id)]


@router.get("/{slug}")
async def show_tenant(
    tenant: registry.TenantRecord = permitted(Action.READ, "read this tenant"),  # noqa: B008
) -> Tenant:
    """One tenant the caller may read."""
    return Tenant.of(tenant)
