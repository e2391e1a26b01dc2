"""The routing seam's decision, table-driven: which tenant records may be routed to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.core.errors import NoPlacement, TenantNotActive, TenantNotFound, TenantSuspended
from services.core.registry.queries import Placement, TenantRecord
from services.core.silo.databases import routable

PLACEMENT = Placement("default", "127.0.0.1", 5432)


def record(status: str = "active", placement: Placement | None = PLACEMENT) -> TenantRecord:
    return TenantRecord(
        id=uuid.uuid4(),
        slug="acme",
        name="acme",
        status=status,
        db_name="x_tenant_acme",
        placement=placement,
        schema_revision="t0001",
        migrated_at=None,
        last_error=None,
        created_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("tenant", "error", "reason"),
    [
        (None, TenantNotFound, "tenant-unknown"),
        (record("suspended"), TenantSuspended, "tenant-suspended"),
        (record("provisioning"), TenantNotActive, "tenant-not-active"),
        (record("deleting"), TenantNotActive, "tenant-not-active"),
        (record(placement=None), NoPlacement, "tenant-no-placement"),
    ],
)
def test_unroutable_tenants_raise_a_named_error(
    tenant: TenantRecord | None, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as info:
        routable(tenant, "acme")
    assert info.value.reason == reason  # type: ignore[attr-defined]


def test_an_active_placed_tenant_is_routable() -> None:
    tenant = record()
    assert routable(tenant, "acme") is tenant
