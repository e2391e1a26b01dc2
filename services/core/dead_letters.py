"""Dead-letter queues for operators (`siloflow dlq` and the API): read them without losing
anything, and replay what can now succeed to where it can succeed. Pure decisions (what a
letter is, whether it matches, where it goes back to, which deliveries are copies of one
letter) are apart from the broker work below.

Exactly once, as operators see it: a service killed after its dead-letter publish was confirmed
and before it acked the original dead-letters that original again when it is redelivered, so a
queue may hold two copies of one report (same message_id, same reason, same body). Operators
never see them twice: listing shows one letter with its number of copies, replaying sends one
copy back and removes the others with it, purging removes them all. Only the same letter is
merged: anyone may publish a message carrying another host's message_id (a forgery is
dead-lettered `bad-signature` without a key), so letters that share an id but differ in reason
or body are listed, replayed and purged apart.

A letter whose AMQP properties could not be decoded (`undecodable`: the socket reader replaced
them, services/core/broker/frames.py) is listed with its size and what could be read of it;
it cannot be replayed (its properties are gone), only purged."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.core import wire
from services.core.broker.connection import connect
from services.core.broker.publish import forward, publish, publishing_channel
from services.core.broker.settle import settle_all
from services.core.broker.users import BrokerRole
from services.core.db import registry_engine
from services.core.errors import Unroutable
from services.core.lifespan import ready_count
from services.core.names import DLQS, Names
from services.core.outcomes import DeadLetterQueue, Reason
from services.core.registry import queries as registry
from services.core.settings import Settings

T = TypeVar("T")

# RabbitMQ's own reasons (x-first-death-reason) in siloflow's spelling.
_BROKER_REASONS = {
    "delivery_limit": "delivery-limit",
    "rejected": "rejected",
    "expired": "expired",
    "maxlen": "queue-full",
}


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, as an operator sees it."""

    queue: DeadLetterQueue
    message_id: str | None
    host_id: str | None
    kind: str | None
    reason: str
    detail: str | None
    stage: str | None
    dead_at: datetime | None
    replays: int
    tenant: str | None
    routing_key: str | None
    headers: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    copies: int = 1  # deliveries in the queue that are this one letter
    # Why its AMQP properties could not be decoded, when they could not (reason `undecodable`).
    undecodable: str | None = None
    size_bytes: int = 0  # its body, and its raw properties when they were undecodable

    @property
    def digest(self) -> str:
        """The body's SHA-256 (hex): with queue, message_id and reason, what makes a letter
        the same letter; its first 12 digits name a letter that has no message_id."""
        return hashlib.sha256(self.body).hexdigest()

    @property
    def label(self) -> str:
        """How `dlq list` names the letter: its message_id, else `sha256:<12 digits>`."""
        return self.message_id or f"sha256:{self.digest[:12]}"

    def as_json(self, *, with_body: bool = False) -> dict[str, object]:
        """The letter as `dlq list --json` shows it (with its headers and body, if asked)."""
        document: dict[str, object] = {
            "queue": self.queue,
            "message_id": self.message_id,
            "sha256": self.digest,
            "host_id": self.host_id,
            "kind": self.kind,
            "reason": self.reason,
            "detail": self.detail,
            "stage": self.stage,
            "dead_at": self.dead_at.isoformat() if self.dead_at else None,
            "replays": self.replays,
            "tenant": self.tenant,
            "copies": self.copies,
            "undecodable": self.undecodable,
            "size_bytes": self.size_bytes,
        }
        if with_body:
            document["headers"] = {k: _shown(k, v) for k, v in self.headers.items()}
            document["body"] = self.body.decode("utf-8", "replace")
        return document


def _shown(name: str, value: Any) -> Any:
    """A header value as JSON shows it: raw property bytes in base64, other bytes as text."""
    if isinstance(value, bytes | bytearray):
        if name == wire.RAW_PROPERTIES:
            return "base64:" + base64.b64encode(bytes(value)).decode()
        return wire.header_text(value)
    return value


def read_letter(
    queue: DeadLetterQueue | str,
    message_id: str | None,
    kind: str | None,
    headers: dict[str, Any],
    body: bytes,
) -> DeadLetter:
    """What a dead letter says about itself (pure)."""
    text = wire.header_text
    reason = text(headers.get(wire.REASON))
    undecodable = text(headers.get(wire.UNDECODABLE))
    raw_bytes = headers.get(wire.RAW_PROPERTIES_BYTES)
    if undecodable is not None and reason is None:
        # Dead-lettered by the broker (its delivery limit, before this version's reader) and
        # undecodable as it is read now: what matters is that it cannot be decoded.
        reason = Reason.UNDECODABLE.value
    if reason is None:  # dead-lettered by the broker itself (e.g. past its delivery limit)
        first = text(headers.get(wire.FIRST_DEATH_REASON))
        reason = _BROKER_REASONS.get(first or "", first or "unknown")
    dead_at_text = text(headers.get(wire.DEAD_AT))
    try:
        dead_at = datetime.fromisoformat(dead_at_text) if dead_at_text else None
    except ValueError:
        dead_at = None
    try:
        replays = int(headers.get(wire.REPLAYS) or 0)
    except (TypeError, ValueError):
        replays = 0
    return DeadLetter(
        queue=DeadLetterQueue(queue),
        message_id=message_id,
        host_id=text(headers.get(wire.HOST_ID)),
        kind=kind or text(headers.get(wire.KIND)),
        reason=reason,
        detail=text(headers.get(wire.DETAIL)),
        stage=text(headers.get(wire.STAGE)),
        dead_at=dead_at,
        replays=replays,
        tenant=text(headers.get(wire.TENANT)),
        routing_key=text(headers.get(wire.ROUTING_KEY)),
        headers=headers,
        body=body,
        undecodable=undecodable,
        size_bytes=len(body) + (raw_bytes if isinstance(raw_bytes, int) else 0),
    )


@dataclass(frozen=True)
class Filters:
    """Which letters an operator means: by queue, reason, host, tenant, age, count."""

    queues: tuple[str, ...] = DLQS
    reason: str | None = None
    host: str | None = None
    tenant: str | None = None
    since: timedelta | None = None
    limit: int | None = None
    # Only these letters (a message_id, or `sha256:<12 digits>` for one that has none).
    letters: frozenset[str] | None = None
    # Only letters carrying one of these tenants (an API caller's: letters of no tenant and of
    # other tenants are not theirs).
    within: frozenset[str] | None = None

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        """Whether the letter is one of them."""
        if self.within is not None and letter.tenant not in self.within:
            return False
        if self.letters is not None and letter.label not in self.letters:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.host is not None and letter.host_id != self.host:
            return False
        if self.tenant is not None and letter.tenant != self.tenant:
            return False
        if self.since is not None:
            return letter.dead_at is not None and letter.dead_at >= now - self.since
        return True


def destination(letter: DeadLetter, names: Names) -> tuple[str, str]:
    """(exchange, routing key) where a letter can succeed once its cause is fixed (pure): a
    failed commit -> its tenant's queue, through the tenants' exchange; any other -> intake,
    through the agents' exchange under the agent's routing key, to be validated and routed
    again (its signature and body travel unchanged). Never the default exchange: it would
    reach every queue of the vhost."""
    if letter.queue == DeadLetterQueue.FAILED and letter.tenant:
        return names.tenants_exchange, letter.tenant
    key = letter.routing_key or ""
    if not key.startswith(wire.REPORT_PREFIX) and letter.kind:
        key = wire.report_routing_key(letter.kind)
    return names.agents_exchange, key


def replay_headers(letter: DeadLetter) -> dict[str, Any]:
    """Headers a replayed letter gains: our own replay count and what killed it last."""
    return {wire.REPLAYS: letter.replays + 1, wire.LAST_REASON: letter.reason}


# -- the broker side ---------------------------------------------------------------------------


@asynccontextmanager
async def held(
    settings: Settings, which: str
) -> AsyncIterator[tuple[AbstractChannel, list[tuple[AbstractIncomingMessage, DeadLetter]]]]:
    """Every message now in a dead-letter queue, delivered and held unacknowledged. What the
    caller does not ack goes back to the queue, in order, when the block ends (its channel
    closes). Dead-letter queues have no delivery limit, so holding them destroys nothing."""
    names = Names(settings.namespace)
    queue_name = names.dlq(which)
    connection = await connect(settings, name=f"dlq {which}", role=BrokerRole.DLQ)
    try:
        channel = await connection.channel()
        count = await ready_count(channel, queue_name)
        letters: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
        if count:
            await channel.set_qos(prefetch_count=min(count, 65_535))
            queue = await channel.declare_queue(queue_name, passive=True)
            got_all = asyncio.Event()

            async def take(message: AbstractIncomingMessage) -> None:
                letters.append(
                    (
                        message,
                        read_letter(
                            which,
                            message.message_id,
                            message.type,
                            dict(message.headers or {}),
                            message.body,
                        ),
                    )
                )
                if len(letters) >= count:
                    got_all.set()

            tag = await queue.consume(take)
            # Fewer than counted may come (someone else took some): work with what came.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got_all.wait(), timeout=30)
            await queue.cancel(tag)
        yield channel, letters
    finally:
        await connection.close()


def same_letter(letter: DeadLetter) -> object:
    """What makes two deliveries copies of one letter (pure): the same queue, message_id,
    reason and body. A message without a message_id is always its own."""
    if not letter.message_id:
        return object()
    return (letter.queue, letter.message_id, letter.reason, letter.digest)


def copies_of(letters: list[tuple[T, DeadLetter]]) -> list[tuple[list[T], DeadLetter]]:
    """The deliveries of a queue as operators see them (pure): copies of one letter
    (`same_letter`) together, in the order the first copy came, the letter saying how many
    there are."""
    groups: dict[object, tuple[list[T], DeadLetter]] = {}
    for delivery, letter in letters:
        key = same_letter(letter)
        if key in groups:
            groups[key][0].append(delivery)
        else:
            groups[key] = ([delivery], letter)
    return [
        (deliveries, replace(first, copies=len(deliveries)))
        for deliveries, first in groups.values()
    ]


def orphaned(letter: DeadLetter, tenants: set[str]) -> DeadLetter:
    """A letter of a tenant that no longer exists says so: its reason becomes `tenant-deleted`
    (pure; what killed it first stays in its headers)."""
    if letter.tenant is not None and letter.tenant not in tenants:
        return replace(letter, reason=Reason.TENANT_DELETED.value)
    return letter


async def _tenant_slugs(settings: Settings) -> set[str]:
    engine = registry_engine(settings)
    try:
        async with engine.connect() as conn:
            return {t.slug for t in await registry.list_tenants(conn)}
    finally:
        await engine.dispose()


async def browse(settings: Settings, filters: Filters) -> list[DeadLetter]:
    """The matching letters, oldest first; nothing is acknowledged or reordered."""
    now = datetime.now(UTC)
    tenants = await _tenant_slugs(settings)
    found: list[DeadLetter] = []
    for which in filters.queues:
        async with held(settings, which) as (_, letters):
            found += [
                letter
                for letter in (orphaned(x, tenants) for _, x in copies_of(letters))
                if filters.matches(letter, now)
            ]
    return found[: filters.limit] if filters.limit else found


@dataclass
class Summary:
    """What a replay or a purge did."""

    done: int = 0  # letters sent back (replay) or dropped (purge)
    skipped: int = 0
    failed: int = 0
    copies_removed: int = 0  # further copies of those letters, removed with them
    by_reason: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


async def replay(
    settings: Settings,
    filters: Filters,
    *,
    rate_per_s: float | None = None,
    progress: Callable[[DeadLetter, str | None], None] | None = None,
) -> Summary:
    """Send matching letters back where they can succeed. A letter leaves its dead-letter queue
    only after its new home confirmed it. `progress` hears of each: None, or why it failed."""
    return await _take(settings, filters, rate_per_s=rate_per_s, progress=progress, purge=False)


async def purge(settings: Settings, filters: Filters) -> Summary:
    """Drop matching letters for good (and every copy of them)."""
    return await _take(settings, filters, rate_per_s=None, progress=None, purge=True)


async def _take(
    settings: Settings,
    filters: Filters,
    *,
    rate_per_s: float | None,
    progress: Callable[[DeadLetter, str | None], None] | None,
    purge: bool,
) -> Summary:
    names = Names(settings.namespace)
    summary = Summary()
    now = datetime.now(UTC)
    interval = 1 / rate_per_s if rate_per_s else 0.0
    budget = filters.limit
    tenants = await _tenant_slugs(settings)
    publisher_connection = await connect(settings, name="dlq replay", role=BrokerRole.DLQ)
    try:
        out = await publishing_channel(publisher_connection)
        for which in filters.queues:
            async with held(settings, which) as (_, letters):
                for messages, found in copies_of(letters):
                    letter = orphaned(found, tenants)
                    if not filters.matches(letter, now) or budget == 0:
                        summary.skipped += 1
                        continue
                    failure = await _send_back(out, names, messages[0], letter, purge=purge)
                    if failure is None:
                        # Every copy leaves with the one sent back (after its confirm).
                        await settle_all(messages)
                        summary.done += 1
                        summary.copies_removed += len(messages) - 1
                        summary.by_reason[letter.reason] += 1
                        if budget is not None:
                            budget -= 1
                    else:
                        summary.failed += 1
                        summary.failures.append(f"{letter.message_id}: {failure}")
                    if progress is not None:
                        progress(letter, failure)
                    if interval:
                        await asyncio.sleep(interval)
    finally:
        await publisher_connection.close()
    return summary


async def _send_back(
    channel: AbstractChannel,
    names: Names,
    message: AbstractIncomingMessage,
    letter: DeadLetter,
    *,
    purge: bool,
) -> str | None:
    """Send one letter back where it can succeed (or, purging, nowhere): None once its new home
    confirmed it, else why not."""
    if purge:
        return None
    if letter.undecodable is not None:
        return "undecodable: its AMQP properties are gone, so it cannot succeed anywhere (purge it)"
    exchange, key = destination(letter, names)
    outgoing = forward(
        message,
        headers=replay_headers(letter),
        message_id=message.message_id or str(uuid.uuid4()),
    )
    try:
        await publish(channel, exchange, key, outgoing)
    except Unroutable:
        return f"nothing takes {key!r} (is the tenant's queue gone?)"
    except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
        return f"publish failed: {exc}"
    return None
