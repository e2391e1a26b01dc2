"""The router's decision, table-driven: a route only to an active tenant, a reason otherwise."""

from __future__ import annotations

import uuid

import pytest

from services.core.domain import TenantStatus
from services.core.outcomes import DeadLetterQueue, Reason
from services.router.handlers import HostBinding, Route, TenantState, Unroutable, decide

HOST = uuid.uuid4()
TENANT = uuid.uuid4()
BOUND = HostBinding(HOST, TENANT, revoked=False)


def tenant(status: str) -> TenantState:
    return TenantState(TENANT, "acme", TenantStatus(status))


@pytest.mark.parametrize(
    ("binding", "state", "reason"),
    [
        (None, None, Reason.NO_TENANT_BINDING),
        (HostBinding(HOST, TENANT, revoked=True), tenant("active"), Reason.HOST_REVOKED),
        (BOUND, None, Reason.TENANT_UNKNOWN),
        (BOUND, tenant("suspended"), Reason.TENANT_SUSPENDED),
        (BOUND, tenant("deleting"), Reason.TENANT_DELETED),
        (BOUND, tenant("provisioning"), Reason.TENANT_NOT_ACTIVE),
    ],
)
def test_unroutable(binding: HostBinding | None, state: TenantState | None, reason: Reason) -> None:
    decision = decide(HOST, binding, state)
    assert isinstance(decision, Unroutable)
    assert decision.reason == reason
    assert decision.reason.dlq is DeadLetterQueue.UNROUTED


def test_an_active_tenant_gets_the_report() -> None:
    assert decide(HOST, BOUND, tenant("active")) == Route("acme")


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
