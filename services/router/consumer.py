"""The router's consumer: read the host from the headers (the body is not parsed again), resolve
it, publish to the tenant's queue (mandatory, confirmed) or dead-letter, then ack. A registry
that cannot be reached is a wait, never a dead letter."""

from __future__ import annotations

import asyncio
import uuid

import structlog
from aio_pika.abc import AbstractIncomingMessage

from services.core import metrics, wire
from services.core.amqp import (
    DeadLetters,
    Publisher,
    Unroutable,
    forward,
    never_raises,
    publish,
    settle,
)
from services.core.errors import DatabaseUnavailable
from services.core.names import Names
from services.core.outcomes import Reason
from services.core.runtime import InFlight, stopped_within
from services.router.directory import RouterDirectory
from services.router.handlers import HostBinding, Route, TenantState, decide

log = structlog.get_logger(__name__)


class RouterConsumer:
    def __init__(
        self,
        publish_channel: Publisher,
        names: Names,
        directory: RouterDirectory,
        dead_letters: DeadLetters,
        *,
        stop: asyncio.Event,
        retry_max_s: float,
    ) -> None:
        self._channel = publish_channel
        self._names = names
        self._directory = directory
        self._dead = dead_letters
        self._stop = stop
        self._retry_max_s = retry_max_s
        self.in_flight = InFlight()
        self.routed = 0

    @never_raises("router")
    async def on_message(self, message: AbstractIncomingMessage) -> None:
        with self.in_flight:
            raw = wire.header_text((message.headers or {}).get(wire.HOST_ID))
            try:
                host_id = uuid.UUID(raw or "")
            except ValueError:
                await self._dead_letter(message, Reason.BAD_HOST_ID, f"header host_id {raw!r}")
                return
            looked_up = await self._lookup(host_id)
            if looked_up is None:  # stopping while the registry is down: hand it back
                await settle(message, requeue=True)
                return
            decision = decide(host_id, *looked_up)
            if not isinstance(decision, Route):
                await self._dead_letter(message, decision.reason, decision.detail)
                return
            queue = self._names.tenant_queue(decision.slug)
            try:
                await publish(
                    self._channel,
                    self._names.tenants_exchange,
                    decision.slug,
                    forward(message, headers={wire.TENANT: decision.slug}),
                )
            except Unroutable:
                await self._dead_letter(
                    message,
                    Reason.TENANT_QUEUE_MISSING,
                    f"tenant {decision.slug!r} has no queue {queue!r}",
                    tenant=decision.slug,
                )
                return
            except Exception:
                log.exception("router.publish_failed", message_id=message.message_id)
                await settle(message, requeue=True)
                return
            self.routed += 1
            metrics.labelled(metrics.REPORTS, "router", "routed").inc()
            await settle(message)

    async def _lookup(
        self, host_id: uuid.UUID
    ) -> tuple[HostBinding | None, TenantState | None] | None:
        """The registry's answer, waiting out registry outages; None if told to stop first."""
        backoff = 0.1
        while True:
            try:
                return await self._directory.lookup(host_id)
            except DatabaseUnavailable as exc:
                log.warning("router.registry_unavailable", error=str(exc), retry_in_s=backoff)
            if await stopped_within(self._stop, backoff):
                return None
            backoff = min(backoff * 2, self._retry_max_s)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: Reason, detail: str, **context: object
    ) -> None:
        try:
            await self._dead.send(message, reason, detail, **context)
        except Exception:
            log.exception("router.dead_letter_failed", message_id=message.message_id)
            await settle(message, requeue=True)
            return
        await settle(message)
