"""The broker topology's shape, as data: the exchanges, the quorum queues and their bindings,
the policies that carry what operators tune, all named from the namespace. Services only check
that what they consume exists (`missing_queues`) and consume it (`consumable`); declaring it is
the operators' (`services.ops.topology`, as the `topology` broker user). Queue arguments hold only
what cannot change after declaration (queue type, single active consumer)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from services.core.names import Names
from services.core.outcomes import DeadLetterQueue
from services.core.settings import Settings
from services.core.wire import REGISTER_KEY, REPORT_BINDING

QUORUM = {"x-queue-type": "quorum"}
# One worker at a time owns a tenant: ordering per tenant, and hot standbys when several worker
# processes consume the same queue.
TENANT_QUEUE_ARGS = {**QUORUM, "x-single-active-consumer": True}


@dataclass(frozen=True)
class ExchangeSpec:
    """An exchange as siloflow declares it."""

    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    """A queue as siloflow declares it, with its bindings."""

    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


@dataclass(frozen=True)
class PolicySpec:
    """A broker policy: what it applies to and what it sets."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0


def exchanges(names: Names) -> list[ExchangeSpec]:
    """The exchanges: the agents' (with its alternate), the tenants', the dead letters'."""
    return [
        ExchangeSpec(names.unmatched_exchange, "fanout"),
        ExchangeSpec(
            names.agents_exchange, "topic", {"alternate-exchange": names.unmatched_exchange}
        ),
        ExchangeSpec(names.tenants_exchange, "direct"),
        ExchangeSpec(names.dead_exchange, "direct"),
    ]


def intake(names: Names) -> QueueSpec:
    """Every report agents publish, and (through the alternate exchange) every publish that
    matched nothing, so ingest can dead-letter it with a reason."""
    return QueueSpec(
        names.intake_queue,
        QUORUM,
        ((names.agents_exchange, REPORT_BINDING), (names.unmatched_exchange, "")),
    )


def legacy_router_inbox(names: Names) -> QueueSpec:
    """`<ns>.router`, the third hop of siloflow before two hops: validated reports waiting for
    their tenant. Never declared any more; the router drains it while it exists, and `migrate`
    (or `topology apply`) deletes it once it is empty (`retire_legacy`)."""
    return QueueSpec(names.router_queue, QUORUM)


def register_inbox(names: Names) -> QueueSpec:
    """The queue of registration requests."""
    return QueueSpec(names.register_queue, QUORUM, ((names.agents_exchange, REGISTER_KEY),))


def queues(names: Names) -> list[QueueSpec]:
    """The queues that exist whatever the tenants: intake, registrations, dead letters."""
    result = [intake(names), register_inbox(names)]
    # Dead-letter queues have no delivery limit and no policy: looking at them never destroys.
    result += [
        QueueSpec(names.dlq(d), QUORUM, ((names.dead_exchange, d.value),)) for d in DeadLetterQueue
    ]
    return result


def tenant_queue(names: Names, slug: str) -> QueueSpec:
    """A tenant's queue, bound to the tenants' exchange by its slug (where the router sends)."""
    return QueueSpec(names.tenant_queue(slug), TENANT_QUEUE_ARGS, ((names.tenants_exchange, slug),))


def policies(names: Names, settings: Settings) -> list[PolicySpec]:
    """Delivery limit and at-least-once dead-lettering for every queue where messages wait to be
    processed; each stage's poison messages land in that stage's dead-letter queue."""
    ns = re.escape(names.namespace)

    def limited(dlq: DeadLetterQueue) -> dict[str, Any]:
        return {
            "delivery-limit": settings.delivery_limit,
            "dead-letter-exchange": names.dead_exchange,
            "dead-letter-routing-key": dlq.value,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",  # at-least-once dead-lettering requires it
        }

    return [
        PolicySpec(names.policy("intake"), rf"^{ns}\.intake$", limited(DeadLetterQueue.INVALID)),
        PolicySpec(
            names.policy("register"), rf"^{ns}\.register$", limited(DeadLetterQueue.INVALID)
        ),
        PolicySpec(names.policy("tenants"), rf"^{ns}\.tenant\.", limited(DeadLetterQueue.FAILED)),
    ]


async def missing_queues(connection: AbstractConnection, names: list[str]) -> list[str]:
    """Which of these queues do not exist. Each is asked on a channel of its own: a passive
    declare of a missing queue closes its channel (and must never close a consuming one)."""
    missing = []
    for name in names:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            missing.append(name)
        finally:
            if not channel.is_closed:
                await channel.close()
    return missing


async def consumable(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """The queue, declared passively on the consuming channel itself (it needs no right, and a
    robust channel restores consumers only of queues it declared, after a reconnection). Check
    that it exists first (`missing_queues`): a missing one closes the channel."""
    return await channel.declare_queue(spec.name, passive=True)
