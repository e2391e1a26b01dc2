"""A small agent client: builds protocol-v1 reports and publishes them the way the protocol asks
(persistent, confirmed, message_id as idempotency key, host_id header). Tests, the demo and the
benchmark publish through it; docs/protocol.md describes the same bytes."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from services.core import wire
from services.core.names import Names


@dataclass(frozen=True)
class OutgoingReport:
    """One report ready to publish (publish it again, unchanged, to retry)."""

    kind: str
    message_id: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def routing_key(self) -> str:
        return wire.report_routing_key(self.kind)

    def message(self) -> aio_pika.Message:
        return aio_pika.Message(
            body=self.body,
            message_id=self.message_id,
            timestamp=self.sent_at,
            content_type=wire.CONTENT_TYPE,
            type=self.kind,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=self.headers,
        )


def build_report(
    kind: str,
    host_id: uuid.UUID,
    data: dict[str, Any],
    *,
    message_id: uuid.UUID | None = None,
    sent_at: datetime | None = None,
) -> OutgoingReport:
    """A report of `kind` for `host_id` (not validated here: ingest is the judge)."""
    sent_at = sent_at or datetime.now(UTC)
    body = {
        "schema": f"{kind}/v1",
        "host_id": str(host_id),
        "sent_at": sent_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return OutgoingReport(
        kind=kind,
        message_id=str(message_id or uuid.uuid4()),
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={wire.HOST_ID: str(host_id)},
        sent_at=sent_at,
    )


class AgentPublisher:
    """Publishes to `<namespace>.agents` over one connection, each publish confirmed."""

    def __init__(self, amqp_url: str, namespace: str) -> None:
        self._url = amqp_url
        self._exchange_name = Names(namespace).agents_exchange
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> AgentPublisher:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": "siloflow agent"}
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, report: OutgoingReport) -> None:
        await self.publish_raw(report.routing_key, report.message())

    async def publish_raw(self, routing_key: str, message: aio_pika.Message) -> None:
        """Any message at all, for tests of what ingest refuses."""
        assert self._channel is not None, "use `async with AgentPublisher(...)`"
        exchange = await self._channel.get_exchange(self._exchange_name, ensure=False)
        await exchange.publish(message, routing_key=routing_key)
