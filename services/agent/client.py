"""The reference agent client: register with an enrollment token, keep the host's identity in a
state file (0600), build and sign protocol-v1 reports, publish them confirmed, retry with the
same message_id. Tests, the demo and the simulator publish through it; docs/protocol.md
describes the same bytes."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import TypeAdapter

from schemas.register import RegisterAccepted, RegisterRejected
from services.core import wire
from services.core.errors import RegistrationFailed
from services.core.hostkeys import sign
from services.core.names import Names
from services.core.secretfile import write_secret_file

Answer = RegisterAccepted | RegisterRejected
_ANSWER = TypeAdapter(Answer)


@dataclass(frozen=True)
class Identity:
    """What registration gives a host: its id and its key. The key signs every report."""

    host_id: uuid.UUID
    host_key: bytes
    key_version: int

    @classmethod
    def from_answer(cls, answer: RegisterAccepted) -> Identity:
        """The identity an accepted registration gave."""
        return cls(answer.host_id, base64.b64decode(answer.host_key), answer.key_version)

    def save(self, path: Path) -> None:
        """Write the state file readable by its owner only."""
        document = {
            "host_id": str(self.host_id),
            "key_version": self.key_version,
            "host_key": base64.b64encode(self.host_key).decode(),
        }
        write_secret_file(path, json.dumps(document))

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read the state file `save` wrote."""
        document = json.loads(path.read_text())
        return cls(
            uuid.UUID(document["host_id"]),
            base64.b64decode(document["host_key"]),
            int(document["key_version"]),
        )


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
        """`report.<kind>`, where an agent publishes it."""
        return wire.report_routing_key(self.kind)

    def signed(self, identity: Identity) -> OutgoingReport:
        """The same report with its host's signature header."""
        signature = sign(
            identity.host_key,
            identity.key_version,
            self.message_id,
            str(identity.host_id),
            self.body,
        )
        return replace(self, headers={**self.headers, wire.SIGNATURE: signature})

    def message(self) -> aio_pika.Message:
        """The report as an AMQP message: persistent, typed, timestamped, its headers set."""
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
    identity: Identity | None = None,
) -> OutgoingReport:
    """A report of `kind` (signed when given the host's identity); ingest is the judge."""
    sent_at = sent_at or datetime.now(UTC)
    body = {
        "schema": f"{kind}/v1",
        "host_id": str(host_id),
        "sent_at": sent_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    report = OutgoingReport(
        kind=kind,
        message_id=str(message_id or uuid.uuid4()),
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={wire.HOST_ID: str(host_id)},
        sent_at=sent_at,
    )
    return report.signed(identity) if identity is not None else report


class AgentPublisher:
    """Publishes to `<namespace>.agents` over one connection, each publish confirmed."""

    def __init__(self, amqp_url: str, namespace: str) -> None:
        self._url = amqp_url
        self._exchange_name = Names(namespace).agents_exchange
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        self._reply_channel: AbstractChannel | None = None
        self._reply_lock = asyncio.Lock()

    async def __aenter__(self) -> AgentPublisher:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": "siloflow agent"}
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, report: OutgoingReport, *, attempts: int = 5) -> None:
        """Publish until the broker confirms. A retry sends the very same message (same
        message_id): if the first one did arrive, the report still lands once."""
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                await self.publish_raw(report.routing_key, report.message())
                return
            except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError):
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay)  # the robust connection reconnects meanwhile
                delay = min(delay * 2, 5.0)

    async def publish_raw(self, routing_key: str, message: aio_pika.Message) -> None:
        """Any message at all, for tests of what ingest refuses."""
        assert self._channel is not None, "use `async with AgentPublisher(...)`"
        exchange = await self._channel.get_exchange(self._exchange_name, ensure=False)
        await exchange.publish(message, routing_key=routing_key)

    async def register(
        self,
        token: str,
        *,
        hostname: str,
        fqdn: str,
        machine_id: str,
        platform: str = "linux",
        agent_version: str = "siloflow-agent/1.0",
        message_id: uuid.UUID | None = None,
        timeout_s: float = 10.0,
        attempts: int = 3,
    ) -> Answer:
        """Trade the token for an identity. Retries use the same message_id, so a lost reply
        costs no second token use and yields the same host id."""
        message_id = message_id or uuid.uuid4()
        body = json.dumps(
            {
                "schema": "register/v1",
                "enrollment_token": token,
                "hostname": hostname,
                "fqdn": fqdn,
                "machine_id": machine_id,
                "platform": platform,
                "agent_version": agent_version,
            }
        ).encode()
        channel = await self._reply_consumer()
        exchange = await channel.get_exchange(self._exchange_name, ensure=False)
        for _ in range(attempts):
            correlation_id = str(uuid.uuid4())
            waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._replies[correlation_id] = waiter
            try:
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        message_id=str(message_id),
                        correlation_id=correlation_id,
                        reply_to=wire.DIRECT_REPLY_TO,
                        content_type=wire.CONTENT_TYPE,
                    ),
                    routing_key=wire.REGISTER_KEY,
                )
                return _ANSWER.validate_json(await asyncio.wait_for(waiter, timeout_s))
            except TimeoutError:
                continue
            finally:
                self._replies.pop(correlation_id, None)
        raise RegistrationFailed(f"no answer to registration {message_id} after {attempts} tries")

    async def _reply_consumer(self) -> AbstractChannel:
        """Direct reply-to: consume the pseudo-queue (no ack) on the channel that publishes."""
        async with self._reply_lock:  # concurrent registrations share one reply consumer
            if self._reply_channel is None:
                assert self._connection is not None, "use `async with AgentPublisher(...)`"
                channel = await self._connection.channel(publisher_confirms=False)
                queue = await channel.get_queue(wire.DIRECT_REPLY_TO, ensure=False)
                await queue.consume(self._on_reply, no_ack=True)
                self._reply_channel = channel
        return self._reply_channel

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiter = self._replies.get(message.correlation_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(message.body)
