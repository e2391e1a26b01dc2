"""Ingest's consumer: decode -> validate -> forward to the router (confirmed) or dead-letter ->
ack, every outcome decided here. A failure to publish leaves the message unacked, so the broker
redelivers it: nothing is acked before its next home has it."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aio_pika.abc import AbstractIncomingMessage

from services.core import metrics, wire
from services.core.amqp import (
    DeadLetters,
    Publisher,
    Unroutable,
    forward,
    never_raises,
    now_ms,
    publish,
    settle,
)
from services.core.names import Names
from services.core.runtime import InFlight
from services.ingest.handlers import Accepted, Delivery, Limits, Verifier, validate

log = structlog.get_logger(__name__)


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The agent's routing key. A dead letter moved back into intake (a replay, or the console's
    Move messages) arrives under the queue's name and carries the original in a header."""
    key = message.routing_key or ""
    if not key.startswith(wire.REPORT_PREFIX):
        recorded = wire.header_text((message.headers or {}).get(wire.ROUTING_KEY))
        if recorded and recorded.startswith(wire.REPORT_PREFIX):
            return recorded
    return key


class IngestConsumer:
    def __init__(
        self,
        publish_channel: Publisher,
        names: Names,
        limits: Limits,
        verifier: Verifier,
        dead_letters: DeadLetters,
    ) -> None:
        self._channel = publish_channel
        self._names = names
        self._limits = limits
        self._verifier = verifier
        self._dead = dead_letters
        self.in_flight = InFlight()

    @never_raises("ingest")
    async def on_message(self, message: AbstractIncomingMessage) -> None:
        with self.in_flight:
            delivery = Delivery(
                routing_key=original_routing_key(message),
                message_id=message.message_id,
                content_type=message.content_type,
                type=message.type,
                headers=message.headers or {},
                body=message.body,
            )
            outcome = validate(
                delivery, now=datetime.now(UTC), limits=self._limits, verifier=self._verifier
            )
            try:
                if isinstance(outcome, Accepted):
                    await self._forward(message, outcome)
                else:
                    await self._dead.send(message, outcome.reason, outcome.detail)
            except Unroutable as exc:
                # The router's inbox is missing: a broken topology, not a bad report. Hold it
                # (the delivery limit dead-letters it if this never heals) and say so loudly.
                log.error("ingest.next_hop_missing", error=str(exc), message_id=message.message_id)
                await settle(message, requeue=True)
                return
            except Exception:
                # Not confirmed: hand it back (or, on a closed channel, the broker will).
                log.exception("ingest.publish_failed", message_id=message.message_id)
                await settle(message, requeue=True)
                return
            await settle(message)

    async def _forward(self, message: AbstractIncomingMessage, accepted: Accepted) -> None:
        headers = {
            wire.HOST_ID: str(accepted.host_id),
            wire.KIND: accepted.kind,
            wire.RECEIVED_AT: now_ms(),
        }
        forwarded = forward(
            message, headers=headers, message_id=str(accepted.message_id), kind=accepted.kind
        )
        await publish(self._channel, "", self._names.router_queue, forwarded)
        metrics.labelled(metrics.REPORTS, "ingest", "accepted").inc()
        log.debug(
            "report.accepted",
            message_id=str(accepted.message_id),
            host_id=str(accepted.host_id),
            kind=accepted.kind,
        )
