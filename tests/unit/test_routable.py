"""The routing seam's decision, table-driven: which tenant records may be routed to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.core.errors import (
    NoPlacement,
    TenantMoving,
    TenantNotActive,
    TenantNotFound,
    TenantSuspended,
)
from services.core.registry.models import MOVE_STEPS, MoveStep
from services.core.registry.queries import Move, Placement, TenantRecord
from services.core.silo.databases import routable

PLACEMENT = Placement("default", "127.0.0.1", 5432)


def record(
    status: str = "active", placement: Placement | None = PLACEMENT, move: MoveStep | None = None
) -> TenantRecord:
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
        move=None
        if move is None
        else Move("default", "second", move, False, None, datetime.now(UTC)),
    )


@pytest.mark.parametrize(
    ("tenant", "error", "reason"),
    [
        (None, TenantNotFound, "tenant-unknown"),
        (record("suspended"), TenantSuspended, "tenant-suspended"),
        (record("provisioning"), TenantNotActive, "tenant-not-active"),
        (record("deleting"), TenantNotActive, "tenant-not-active"),
        (record(placement=None), NoPlacement, "tenant-no-placement"),
        *(
            (record(move=step), TenantMoving, "tenant-moving")
            for step in MoveStep
            if step is not MoveStep.SWITCHED
        ),
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


def test_a_tenant_whose_move_switched_commits_on_its_new_placement() -> None:
    tenant = record(move=MoveStep.SWITCHED)
    assert not tenant.paused and routable(tenant, "acme") is tenant


def test_the_migration_allows_exactly_the_move_steps() -> None:
    import importlib.util  # noqa: PLC0415 - a migration module is loaded by path, once
    from pathlib import Path  # noqa: PLC0415

    path = Path(__file__).parents[2] / "migrations/registry/versions/r0005_registry_tenant_moves.py"
    spec = importlib.util.spec_from_file_location("r0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert tuple(step.value for step in MOVE_STEPS) == module.STEPS
