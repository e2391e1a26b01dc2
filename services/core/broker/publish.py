"""Publishing with the guarantees the pipeline relies on: every publish is confirmed by the
broker, a publish no queue takes raises (`Unroutable`), and a message moved on keeps its
message_id, properties and body. Dead letters are published here, in one place."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq import spec

from services.core import metrics, wire
from services.core.errors import Unroutable
from services.core.names import Names
from services.core.outcomes import Reason, Stage

log = structlog.get_logger(__name__)

MAX_DETAIL_CHARS = 1_000
PERSISTENT = 2  # AMQP delivery mode: written to disk (quorum queues keep every message anyway)


# Publishing channels a service uses in turn. aiormq serialises a channel's publishes on a lock
# handed over once per loop turn, so one channel sends one publish a turn however many are
# waiting; with several, a turn's publishes leave together (see `transport`).
PUBLISH_CHANNELS = 8


async def publishing_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel whose publishes are confirmed and whose returns raise."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


class Publisher(Protocol):
    """Where `publish` sends: a publishing channel, or a `ChannelPool` of them."""

    async def get_underlay_channel(self) -> aiormq.abc.AbstractChannel:
        """The aiormq channel the next publish goes through."""
        ...


class ChannelPool:
    """Publishing channels used in turn, one publish each."""

    def __init__(self, channels: list[AbstractChannel]) -> None:
        self._channels = channels
        self._next = 0

    @classmethod
    async def open(
        cls, connection: AbstractConnection, size: int = PUBLISH_CHANNELS
    ) -> ChannelPool:
        """A pool of `size` publishing channels on the connection."""
        return cls([await publishing_channel(connection) for _ in range(size)])

    async def get_underlay_channel(self) -> aiormq.abc.AbstractChannel:
        """The next channel of the pool, in turn."""
        channel = self._channels[self._next]
        self._next = (self._next + 1) % len(self._channels)
        return await channel.get_underlay_channel()


@dataclass(frozen=True)
class Outgoing:
    """A message to publish: its body and its AMQP properties, as aiormq sends them. (Built
    directly: an aio_pika.Message and its properties cost three times as much, per hop.)"""

    body: bytes
    properties: spec.Basic.Properties


def forward(
    incoming: AbstractIncomingMessage,
    *,
    headers: dict[str, Any],
    message_id: str | None = None,
    kind: str | None = None,
) -> Outgoing:
    """The same message (body, message_id and properties) with headers added, persistent;
    `message_id` and `kind` (the AMQP type) replace the incoming ones when given."""
    merged = dict(incoming.headers or {})
    merged.pop(wire.DELIVERY_COUNT, None)  # the broker's count on the queue it came from
    for name in wire.DEAD_LETTER_HEADERS:  # a replayed or moved letter is no longer dead
        merged.pop(name, None)
    merged.update(headers)
    return Outgoing(
        incoming.body,
        spec.Basic.Properties(
            headers=merged,
            content_type=incoming.content_type,
            content_encoding=incoming.content_encoding,
            delivery_mode=PERSISTENT,
            priority=incoming.priority,
            correlation_id=incoming.correlation_id,
            reply_to=incoming.reply_to,
            message_id=message_id or incoming.message_id,
            timestamp=incoming.timestamp,
            message_type=kind or incoming.type,
            # user_id is never copied: the broker checks it against the publishing user.
            app_id=incoming.app_id,
        ),
    )


async def publish(
    channel: Publisher, exchange: str, routing_key: str, message: Outgoing | aio_pika.Message
) -> None:
    """Publish and wait for the broker's confirm; `Unroutable` if no queue took it.

    Through aiormq's channel with `wait=False`: aio-pika's publish waits, holding the channel's
    lock, until the frame has been written, so a channel sends one publish per loop turn. Not
    waiting for the write lets the publishes of a turn leave together (see `transport`); the
    broker's confirm, the only wait that says anything about durability, is still awaited."""
    underlay = await channel.get_underlay_channel()
    properties = message.properties  # built once here for an aio_pika.Message
    try:
        await underlay.basic_publish(  # type: ignore[call-arg]  # wait: aiormq's abc omits it
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
            wait=False,
        )
    except aiormq.exceptions.PublishError:  # a Basic.Return: no queue was bound for it
        raise Unroutable(exchange, routing_key) from None


class DeadLetters:
    """Sends a message to its dead-letter queue with the reason headers, and logs it loudly."""

    def __init__(self, channel: Publisher, names: Names, stage: Stage) -> None:
        self._channel = channel
        self._names = names
        self._stage = stage

    async def send(
        self, incoming: AbstractIncomingMessage, reason: Reason, detail: str, **context: Any
    ) -> None:
        """Publish the dead letter (confirmed). The caller acks the original afterwards."""
        detail = detail[:MAX_DETAIL_CHARS]
        dead_at = datetime.now(UTC).isoformat()
        message = forward(
            incoming,
            headers={
                wire.REASON: reason.value,
                wire.DETAIL: detail,
                wire.STAGE: self._stage.value,
                wire.DEAD_AT: dead_at,
                # Kept from the first death on: later stages see only their own queue's key.
                wire.ROUTING_KEY: wire.header_text((incoming.headers or {}).get(wire.ROUTING_KEY))
                or incoming.routing_key
                or "",
            },
        )
        which = reason.dlq
        await publish(self._channel, self._names.dead_exchange, which, message)
        metrics.labelled(metrics.DEAD_LETTERS, self._stage.value, reason.value).inc()
        metrics.labelled(metrics.REPORTS, self._stage.value, "dead_lettered").inc()
        log.error(
            "report.dead_lettered",
            message_id=incoming.message_id,
            host_id=wire.header_text((incoming.headers or {}).get(wire.HOST_ID)),
            reason=reason.value,
            detail=detail,
            stage=self._stage.value,
            dlq=self._names.dlq(which),
            **context,
        )


def now_ms() -> int:
    """The time now, in epoch milliseconds (the received-at header)."""
    return int(time.time() * 1000)
