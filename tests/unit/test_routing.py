"""The one routing rule, table-driven: a route only to an active tenant of a bound, unrevoked
host, a reason otherwise; and the silo's seam, which reads the same rule, refusing with an
error that carries the same reason (the two cannot disagree)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from services.core.domain import TenantStatus
from services.core.errors import ResolutionError, TenantNotFound
from services.core.outcomes import DeadLetterQueue, Reason
from services.core.registry.queries import TenantRecord
from services.core.routing import Binding, Route, TenantState, Unroutable, admits, resolve
from services.core.silo.databases import routable, routable_host
from tests.unit.records import tenant_record

HOST = uuid.uuid4()
TENANT = uuid.uuid4()
BOUND = Binding(HOST, TENANT, revoked=False)


def tenant(status: str) -> TenantState:
    return TenantState(TENANT, "acme", TenantStatus(status))


@pytest.mark.parametrize(
    ("binding", "state", "reason"),
    [
        (None, None, Reason.NO_TENANT_BINDING),
        (Binding(HOST, TENANT, revoked=True), tenant("active"), Reason.HOST_REVOKED),
        (BOUND, None, Reason.TENANT_UNKNOWN),
        (BOUND, tenant("suspended"), Reason.TENANT_SUSPENDED),
        (BOUND, tenant("deleting"), Reason.TENANT_DELETED),
        (BOUND, tenant("provisioning"), Reason.TENANT_NOT_ACTIVE),
    ],
)
def test_unroutable(binding: Binding | None, state: TenantState | None, reason: Reason) -> None:
    decision = resolve(HOST, binding, state)
    assert isinstance(decision, Unroutable)
    assert decision.reason == reason
    assert decision.reason.dlq is DeadLetterQueue.UNROUTED


def test_an_active_tenant_gets_the_report() -> None:
    assert resolve(HOST, BOUND, tenant("active")) == Route("acme")


def record(status: TenantStatus) -> TenantRecord:
    return tenant_record(status, tenant_id=TENANT)


BINDINGS = [None, BOUND, Binding(HOST, TENANT, revoked=True)]
TENANTS = [None, *TenantStatus]


@pytest.mark.parametrize(
    ("binding", "status"),
    list(itertools.product(BINDINGS, TENANTS)),
    ids=lambda v: str(v)[:20],
)
def test_the_seam_and_the_router_agree_on_every_host(
    binding: Binding | None, status: TenantStatus | None
) -> None:
    """Every binding against every tenant status (and none): where the router routes, the seam
    gives the same tenant; where it dead-letters, the seam raises an error of the same reason."""
    full = None if status is None else record(status)
    kept = None if status is None else TenantState(TENANT, "acme", status)
    decision = resolve(HOST, binding, kept)
    if isinstance(decision, Route):
        assert routable_host(HOST, binding, full).slug == decision.slug
        return
    with pytest.raises(ResolutionError) as info:
        routable_host(HOST, binding, full)
    assert info.value.reason is decision.reason


@pytest.mark.parametrize("status", TENANTS, ids=str)
def test_a_tenant_named_by_slug_is_admitted_by_the_same_rule(status: TenantStatus | None) -> None:
    full = None if status is None else record(status)
    decision = admits(full, "acme")
    if isinstance(decision, Route):
        assert routable(full, "acme") is full
        return
    with pytest.raises(ResolutionError) as info:
        routable(full, "acme")
    assert info.value.reason is decision.reason


@pytest.mark.parametrize(
    ("reason", "dlq"),
    [
        (Reason.SCHEMA_VIOLATION, "invalid"),
        (Reason.BAD_SIGNATURE, "invalid"),
        (Reason.NO_TENANT_BINDING, "unrouted"),
        (Reason.TENANT_QUEUE_MISSING, "unrouted"),
        (Reason.COMMIT_REJECTED, "failed"),
        (Reason.DELIVERY_LIMIT, "failed"),
    ],
)
def test_each_reason_has_one_dead_letter_queue(reason: Reason, dlq: str) -> None:
    assert reason.dlq == dlq


def test_every_reason_belongs_to_exactly_one_dead_letter_queue() -> None:
    """By construction: a reason is defined with its queue, and one value is one member."""
    assert all(isinstance(reason.dlq, DeadLetterQueue) for reason in Reason)
    values = [reason.value for reason in Reason]
    assert len(values) == len(set(values)), "two reasons share a code"
    assert {reason.dlq for reason in Reason} == set(DeadLetterQueue), "a queue no reason uses"


def test_a_binding_to_a_tenant_the_registry_lost_names_that_tenant() -> None:
    with pytest.raises(TenantNotFound) as info:
        routable_host(HOST, BOUND, None)
    assert info.value.tenant == str(TENANT)
