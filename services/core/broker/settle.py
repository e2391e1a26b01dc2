"""Settling a delivery, in one place: a consumer's handler decides and returns what becomes of
the message (`ACK`: its next home has it, or nothing more is owed; `REQUEUE`: hand it back, it
is not this process's to decide now; `ToDeadLetters`: the reason it can never be delivered),
and `settled` (or `settled_all`, for a batch) carries that out. A dead letter is acked only once
it is confirmed in its queue; a handler that raises hands its message back. (aio-pika's
`message.process()` context is the model: the handler decides, the context settles.)"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol, TypeVar

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage

from services.core import metrics, wire
from services.core.broker import acks
from services.core.broker.publish import DeadLetters
from services.core.logs import MESSAGE
from services.core.outcomes import Reason

log = structlog.get_logger(__name__)


class Settle(Enum):
    """A settlement with nothing more to say."""

    ACK = "ack"  # done: the next home has the message (or it is owed nothing more)
    REQUEUE = "requeue"  # hand it back to its queue (stopping, or a publish not confirmed)


ACK = Settle.ACK
REQUEUE = Settle.REQUEUE


@dataclass(frozen=True)
class ToDeadLetters:
    """The message can never be delivered: dead-letter it with this reason, then ack it."""

    reason: Reason
    detail: str
    context: Mapping[str, object] = field(default_factory=dict)


Settlement = Settle | ToDeadLetters


class Consumer(Protocol):
    """What `settles` needs of the consumer whose handler it wraps."""

    @property
    def dead_letters(self) -> DeadLetters:
        """Where its dead letters go."""
        ...

    @property
    def in_flight(self) -> AbstractContextManager[Any]:
        """Counts the message as in hand from its delivery until it is settled (a service
        stopping waits for it: `lifespan.InFlight`)."""
        ...


async def settle(message: AbstractIncomingMessage, *, requeue: bool | None = None) -> bool:
    """Ack (default) or, with `requeue`, nack the message. Acks go with the others finished in
    the same loop turn (`acks.Acker`); every settle of a process goes through here, so the
    ledger of each channel sees every delivery. On a channel that is already gone this does
    nothing: the broker returns unacked messages by itself. Returns whether it was settled."""
    try:
        if requeue is None:
            return await acks.acker().ack(message)
        await message.nack(requeue=requeue)
        acks.acker().rejected(message)
    except (
        aiormq.exceptions.AMQPError,
        aio_pika.exceptions.ChannelInvalidStateError,
        ConnectionError,
        RuntimeError,
    ) as exc:
        log.warning("amqp.settle_failed", message_id=message.message_id, error=str(exc))
        return False
    return True


async def settle_all(messages: Iterable[AbstractIncomingMessage]) -> None:
    """Ack these together (one frame where their delivery tags run unbroken)."""
    await asyncio.gather(*(settle(message) for message in messages))


async def settled(
    dead: DeadLetters, message: AbstractIncomingMessage, settlement: Settlement
) -> None:
    """Carry out what the handler decided for the message. A dead letter that cannot be
    published hands the message back instead: it is never acked without its next home."""
    if settlement is ACK:
        await settle(message)
    elif settlement is REQUEUE:
        await settle(message, requeue=True)
    else:
        assert isinstance(settlement, ToDeadLetters)
        try:
            await dead.send(message, settlement.reason, settlement.detail, **settlement.context)
        except Exception:
            log.exception(
                "report.dead_letter_failed", message_id=message.message_id, **settlement.context
            )
            await settle(message, requeue=True)
            return
        await settle(message)


async def settled_all(
    dead: DeadLetters, settlements: Iterable[tuple[AbstractIncomingMessage, Settlement]]
) -> None:
    """Carry out a batch's settlements; its acks go together (one frame where their delivery
    tags run unbroken)."""
    await asyncio.gather(*(settled(dead, message, s) for message, s in settlements))


C = TypeVar("C", bound=Consumer)
Handler = Callable[[C, AbstractIncomingMessage], Awaitable[Settlement]]
Callback = Callable[[C, AbstractIncomingMessage], Awaitable[None]]


def settles(stage: str, *, identify: bool = True) -> Callable[[Handler[C]], Callback[C]]:
    """Make a consumer's handler, which returns its message's settlement, into the callback
    aio-pika calls: the settlement is carried out here (`settled`); an unexpected error is
    logged with the message's identity and the message handed back to its queue (its delivery
    limit ends a poison loop), never left unacknowledged with the error swallowed by the
    client library. With `identify`, every line logged meanwhile names the message (its
    message_id and host_id)."""

    def wrap(handler: Handler[C]) -> Callback[C]:
        @functools.wraps(handler)
        async def callback(consumer: C, message: AbstractIncomingMessage) -> None:
            observe_lag(message, stage)
            # Every line logged while handling this message says which message it is about.
            identity: tuple[str | None, str | None, str] = (
                (
                    message.message_id,
                    wire.header_text((message.headers or {}).get(wire.HOST_ID)),
                    stage,
                )
                if identify
                else (None, None, stage)
            )
            token = MESSAGE.set(identity)
            try:
                with consumer.in_flight:
                    try:
                        settlement = await handler(consumer, message)
                    except Exception:
                        log.exception(f"{stage}.unexpected_error")
                        settlement = REQUEUE
                    await settled(consumer.dead_letters, message, settlement)
            finally:
                MESSAGE.reset(token)

        return callback

    return wrap


# The lag gauge is a sample: set at most this often per (stage, tenant), not on every message.
LAG_SAMPLE_S = 0.5
_lag_sampled: dict[tuple[str, str], float] = {}


def observe_lag(message: AbstractIncomingMessage, stage: str, tenant: str = "") -> None:
    """How long the message waited, by the timestamp its publisher set (agents set it; every
    forward keeps it). A gauge is read every scrape, so one message each half second says as
    much as all of them, for a fraction of the work."""
    now = time.monotonic()
    if now - _lag_sampled.get((stage, tenant), -LAG_SAMPLE_S) < LAG_SAMPLE_S:
        return
    _lag_sampled[(stage, tenant)] = now
    if message.timestamp is None:
        return
    sent = message.timestamp
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    waited = max((datetime.now(UTC) - sent).total_seconds(), 0.0)
    metrics.labelled(metrics.QUEUE_LAG, stage, tenant).set(waited)
