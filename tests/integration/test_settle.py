"""The one place that settles (`services.core.broker.settle`), against the real broker: a
handler returns what becomes of its message and `settles` carries it out. An ack removes it, a
requeue hands it back, a dead letter is acked only once it is confirmed in its queue (and handed
back when it cannot be published), a handler that raises hands its message back; and nothing is
left unacked."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import nullcontext
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from services.core import wire
from services.core.broker.publish import DeadLetters, publishing_channel
from services.core.broker.settle import (
    ACK,
    REQUEUE,
    Settlement,
    ToDeadLetters,
    settles,
)
from services.core.names import Names
from services.core.outcomes import DeadLetterQueue, Reason, Stage
from services.core.settings import Settings

QUORUM = {"x-queue-type": "quorum"}


class FlakyDeadLetters(DeadLetters):
    """Real dead letters, except that the first one of a body named here fails to publish (as
    when the broker refuses it or the channel closes under it)."""

    def __init__(self, *args: Any, fail_once: bytes) -> None:
        super().__init__(*args)
        self._fail_once: bytes | None = fail_once

    async def send(
        self, incoming: AbstractIncomingMessage, reason: Reason, detail: str, **context: Any
    ) -> None:
        if incoming.body == self._fail_once:
            self._fail_once = None
            raise ConnectionError("the dead letter was not confirmed")
        await super().send(incoming, reason, detail, **context)


class Recorder:
    """A consumer: each body says what its handler decides the first time it is seen; the
    second time it is acked."""

    def __init__(self, dead_letters: DeadLetters, expected: int) -> None:
        self.dead_letters = dead_letters
        self.in_flight = nullcontext()
        self.seen: Counter[bytes] = Counter()
        self.redelivered: set[bytes] = set()
        self._expected = expected
        self.finished = asyncio.Event()
        self.acked: list[bytes] = []

    @settles("test")
    async def on_message(self, message: AbstractIncomingMessage) -> Settlement:
        body = message.body
        self.seen[body] += 1
        if message.redelivered:
            self.redelivered.add(body)
        first = self.seen[body] == 1
        if body == b"raise" and first:
            raise RuntimeError("a bug in the handler")
        if body == b"requeue" and first:
            return REQUEUE
        if body in (b"dead", b"dead-unsent") and first:
            return ToDeadLetters(Reason.NOT_JSON, f"{body.decode()} is not JSON", {"tenant": "t"})
        self.acked.append(body)
        if len(self.acked) >= self._expected:
            self.finished.set()
        return ACK


async def test_each_settlement_is_carried_out_and_nothing_is_left_unacked(
    broker_only: Settings,
) -> None:
    names = Names(broker_only.namespace)
    connection = await aio_pika.connect(broker_only.amqp_url)
    try:
        setup = await connection.channel()
        dead_exchange = await setup.declare_exchange(
            names.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dlq = await setup.declare_queue(
            names.dlq(DeadLetterQueue.INVALID), durable=True, arguments=QUORUM
        )
        await dlq.bind(dead_exchange, routing_key=DeadLetterQueue.INVALID.value)
        await setup.declare_queue("work", durable=True, arguments=QUORUM)

        dead = FlakyDeadLetters(
            await publishing_channel(connection), names, Stage.ROUTER, fail_once=b"dead-unsent"
        )
        bodies = [b"ack", b"requeue", b"dead", b"dead-unsent", b"raise"]
        # Acked by the handler: ack, and each of requeue, dead-unsent and raise the second time.
        recorder = Recorder(dead, expected=4)
        consume = await connection.channel()
        queue = await consume.get_queue("work")
        tag = await queue.consume(recorder.on_message)
        for body in bodies:
            await setup.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="work",
            )
        await asyncio.wait_for(recorder.finished.wait(), 30)

        # What was handed back came back (redelivered); what was dead-lettered did not.
        assert recorder.redelivered == {b"requeue", b"dead-unsent", b"raise"}
        assert recorder.seen[b"dead"] == 1
        assert sorted(recorder.acked) == sorted([b"ack", b"requeue", b"dead-unsent", b"raise"])
        # The dead letter is in its queue with its reason, once; the unsent one is not (every
        # dead letter was confirmed before its original was acked, so the count is final).
        counted = await setup.declare_queue(dlq.name, passive=True)
        assert counted.declaration_result.message_count == 1
        letters: list[AbstractIncomingMessage] = []
        got = asyncio.Event()

        async def collect(message: AbstractIncomingMessage) -> None:
            letters.append(message)
            await message.ack()
            got.set()

        reader = await connection.channel()
        await (await reader.get_queue(dlq.name)).consume(collect)
        await asyncio.wait_for(got.wait(), 30)
        assert [m.body for m in letters] == [b"dead"]
        headers = letters[0].headers or {}
        assert headers[wire.REASON] == Reason.NOT_JSON.value
        assert headers[wire.DETAIL] == "dead is not JSON"

        # Nothing is held unacked: closing the channel would hand it back to the queue.
        await queue.cancel(tag)
        await consume.close()
        check = await connection.channel()
        left = await check.declare_queue("work", durable=True, arguments=QUORUM)
        assert left.declaration_result.message_count == 0
    finally:
        await connection.close()
