"""`/api/v1/tenants/{slug}/audit` (a tenant's trail: its silo's entries and the registry's about
it; `operator` and above) and `/api/v1/audit` (the registry's trail: server-wide acts; `admin`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.deps import Authenticated, Registry, permitted, silo
from services.api.errors import forbidden
from services.core.access import Action, may
from services.core.audit import Recorded, merged
from services.core.registry import audit as registry_audit
from services.core.registry.queries import TenantRecord
from services.core.silo import audit as silo_audit

router = APIRouter(tags=["audit"])

WHAT = "read this tenant's audit trail"
Limit = Annotated[int, Query(ge=1, le=1000)]


class AuditEntry(BaseModel):
    """One recorded act: who (`operator:<name>` or `cli:<user>`), what, on which tenant, when,
    how it ended, and where it is kept (`silo` or `registry`)."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    tenant: str | None
    outcome: str
    detail: dict[str, Any]
    kept_in: str

    @classmethod
    def of(cls, recorded: Recorded) -> AuditEntry:
        """The view of a recorded entry."""
        return cls.model_validate(recorded.as_json())


@router.get("/tenants/{slug}/audit")
async def tenant_trail(
    engine: Registry,
    limit: Limit = 100,
    tenant: TenantRecord = permitted(Action.AUDIT, WHAT),  # noqa: B008
    conn: AsyncConnection = silo(Action.AUDIT, WHAT),  # noqa: B008
) -> list[AuditEntry]:
    """Who did what to the tenant, newest first."""
    own = await silo_audit.entries(conn, tenant.slug, limit=limit)
    async with engine.connect() as registry_conn:
        kept = await registry_audit.entries(registry_conn, tenant=tenant.slug, limit=limit)
    return [AuditEntry.of(r) for r in merged(own, kept, limit=limit)]


@router.get("/audit")
async def server_trail(
    who: Authenticated,
    engine: Registry,
    limit: Limit = 100,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AuditEntry]:
    """The registry's trail (server-wide acts, and tenant acts kept there), newest first."""
    if not may(who.grants, Action.SERVER):
        raise forbidden("read the server's audit trail")
    async with engine.connect() as conn:
        kept = await registry_audit.entries(conn, tenant=tenant, limit=limit)
    return [AuditEntry.of(r) for r in kept]
