"""The routing seam's decision, table-driven: which tenant records may be routed to."""

from __future__ import annotations

import pytest

from services.core.domain import MOVE_STEPS, MoveStep
from services.core.errors import (
    NoPlacement,
    ResolutionError,
    TenantDeleting,
    TenantMoving,
    TenantNotActive,
    TenantNotFound,
    TenantSuspended,
)
from services.core.outcomes import DeadLetterQueue, Reason
from services.core.registry.queries import Placement, TenantRecord
from services.core.silo.databases import routable
from tests.unit.records import PLACEMENT, tenant_record


def record(
    status: str = "active", placement: Placement | None = PLACEMENT, move: MoveStep | None = None
) -> TenantRecord:
    return tenant_record(status, placement=placement, move=move)


@pytest.mark.parametrize(
    ("tenant", "error", "reason"),
    [
        (None, TenantNotFound, Reason.TENANT_UNKNOWN),
        (record("suspended"), TenantSuspended, Reason.TENANT_SUSPENDED),
        (record("provisioning"), TenantNotActive, Reason.TENANT_NOT_ACTIVE),
        (record("deleting"), TenantDeleting, Reason.TENANT_DELETED),
        (record(placement=None), NoPlacement, Reason.TENANT_NO_PLACEMENT),
        *(
            (record(move=step), TenantMoving, None)  # waited out: no dead letter
            for step in MoveStep
            if step is not MoveStep.SWITCHED
        ),
    ],
)
def test_unroutable_tenants_raise_a_named_error(
    tenant: TenantRecord | None, error: type[Exception], reason: Reason | None
) -> None:
    with pytest.raises(error) as info:
        routable(tenant, "acme")
    assert info.value.reason is reason  # type: ignore[attr-defined]


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


def _resolution_errors() -> list[type[ResolutionError]]:
    found: list[type[ResolutionError]] = []
    pending = [ResolutionError]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


@pytest.mark.parametrize("error", _resolution_errors(), ids=lambda e: e.__name__)
def test_every_resolution_error_names_its_dead_letter_reason(
    error: type[ResolutionError],
) -> None:
    # A refusal that ends in a dead letter says which, as the router's and the API's words;
    # a move is waited out and ends in none.
    if error is TenantMoving:
        assert error.reason is None
    else:
        assert isinstance(error.reason, Reason)
        assert error.reason.dlq is DeadLetterQueue.UNROUTED
