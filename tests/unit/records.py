"""Registry records as the pure rules see them, for unit tests (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.core.domain import MoveStep, TenantStatus
from services.core.registry.queries import Move, Placement, TenantRecord

PLACEMENT = Placement("default", "127.0.0.1", 5432)


def tenant_record(
    status: str = TenantStatus.ACTIVE,
    *,
    placement: Placement | None = PLACEMENT,
    move: MoveStep | None = None,
    tenant_id: uuid.UUID | None = None,
) -> TenantRecord:
    """Tenant `acme` as the registry would give it: active and placed unless told otherwise."""
    return TenantRecord(
        id=tenant_id or uuid.uuid4(),
        slug="acme",
        name="acme",
        status=TenantStatus(status),
        db_name="x_tenant_acme",
        placement=placement,
        schema_revision="t0001",
        migrated_at=None,
        last_error=None,
        created_at=datetime.now(UTC),
        move=None
        if move is None
        else Move("default", "second", move, False, None, datetime.now(UTC)),
    )
