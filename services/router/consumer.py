"""The router's consumer, the one service between agents and tenant queues: decode -> validate
(size, routing key, properties, headers, signature, body) -> resolve the host -> publish to the
tenant's queue (mandatory, confirmed) or dead-letter -> ack: each handler returns its
message's settlement and `settle.settles` carries it out. A
publish that is not confirmed leaves the delivery unacked, so the broker redelivers it: nothing
is acked before its next home has it. A registry that cannot be reached is a wait, never a dead
letter."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import structlog
from aio_pika.abc import AbstractIncomingMessage

from services.core import metrics, wire
from services.core.broker.publish import DeadLetters, Publisher, forward, now_ms, publish
from services.core.broker.settle import ACK, REQUEUE, Settlement, ToDeadLetters, settles
from services.core.diagnosis import Outage
from services.core.errors import DatabaseUnavailable, Unroutable
from services.core.lifespan import InFlight, Stopped, retried_until_stopped
from services.core.names import Names
from services.core.outcomes import Reason
from services.core.routing import Binding, Route, TenantState, resolve
from services.router.directory import RouterDirectory
from services.router.handlers import Accepted, Delivery, Limits, Verifier, validate

log = structlog.get_logger(__name__)


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The agent's routing key. A dead letter moved back into intake by hand (the console's Move
    messages) arrives under the queue's name and carries the original in a header."""
    key = message.routing_key or ""
    if not key.startswith(wire.REPORT_PREFIX):
        recorded = wire.header_text((message.headers or {}).get(wire.ROUTING_KEY))
        if recorded and recorded.startswith(wire.REPORT_PREFIX):
            return recorded
    return key


class RouterConsumer:
    """Validates, resolves and forwards the reports of `<ns>.intake`; and, while a deployment
    upgraded from three hops still has some, the already validated reports of `<ns>.router`."""

    def __init__(
        self,
        publish_channel: Publisher,
        names: Names,
        limits: Limits,
        verifier: Verifier,
        directory: RouterDirectory,
        dead_letters: DeadLetters,
        *,
        stop: asyncio.Event,
        retry_max_s: float,
        registry_outage: Outage,
    ) -> None:
        self._channel = publish_channel
        self._names = names
        self._limits = limits
        self._verifier = verifier
        self._directory = directory
        self.dead_letters = dead_letters
        self._stop = stop
        self._retry_max_s = retry_max_s
        self._registry_outage = registry_outage
        self.in_flight = InFlight()
        self.routed = 0

    @settles("router")
    async def on_report(self, message: AbstractIncomingMessage) -> Settlement:
        """A report as an agent published it (or as a replay sends it back)."""
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
        if not isinstance(outcome, Accepted):
            return ToDeadLetters(outcome.reason, outcome.detail)
        metrics.labelled(metrics.REPORTS, "router", "accepted").inc()
        headers = {
            wire.HOST_ID: str(outcome.host_id),
            wire.KIND: outcome.kind,
            wire.RECEIVED_AT: now_ms(),
        }
        return await self._route(
            message, outcome.host_id, headers, str(outcome.message_id), outcome.kind
        )

    @settles("router")
    async def on_validated(self, message: AbstractIncomingMessage) -> Settlement:
        """A report the ingest of a three-hop deployment validated and left in `<ns>.router`
        (its headers say whose it is): resolve and forward, as that version's router did."""
        raw = wire.header_text((message.headers or {}).get(wire.HOST_ID))
        try:
            host_id = uuid.UUID(raw or "")
        except ValueError:
            return ToDeadLetters(Reason.BAD_HOST_ID, f"header host_id {raw!r}")
        return await self._route(message, host_id, {}, None, None)

    async def _route(
        self,
        message: AbstractIncomingMessage,
        host_id: uuid.UUID,
        headers: dict[str, object],
        message_id: str | None,
        kind: str | None,
    ) -> Settlement:
        looked_up = await self._lookup(host_id)
        if looked_up is None:  # stopping while the registry is down: hand it back
            return REQUEUE
        decision = resolve(host_id, *looked_up)
        if not isinstance(decision, Route):
            return ToDeadLetters(decision.reason, decision.detail)
        outgoing = forward(
            message,
            headers={**headers, wire.TENANT: decision.slug},
            message_id=message_id,
            kind=kind,
        )
        try:
            await publish(self._channel, self._names.tenants_exchange, decision.slug, outgoing)
        except Unroutable:
            queue = self._names.tenant_queue(decision.slug)
            return ToDeadLetters(
                Reason.TENANT_QUEUE_MISSING,
                f"tenant {decision.slug!r} has no queue {queue!r}",
                {"tenant": decision.slug},
            )
        except Exception:
            # Not confirmed: hand it back (or, on a closed channel, the broker will).
            log.exception("router.publish_failed", message_id=message.message_id)
            return REQUEUE
        self.routed += 1
        metrics.labelled(metrics.REPORTS, "router", "routed").inc()
        return ACK

    async def _lookup(self, host_id: uuid.UUID) -> tuple[Binding | None, TenantState | None] | None:
        """The registry's answer, waiting out registry outages; None if told to stop first."""
        found = await retried_until_stopped(
            lambda: self._directory.lookup(host_id),
            retryable=lambda exc, _: isinstance(exc, DatabaseUnavailable),
            outage=self._registry_outage,
            stop=self._stop,
            retry_max_s=self._retry_max_s,
        )
        return None if isinstance(found, Stopped) else found
