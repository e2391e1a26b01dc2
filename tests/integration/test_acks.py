"""Batched acks against the real broker: deliveries settled in a scrambled order, some nacked,
several consumers on one channel, and the broker must agree with us: every acked one gone,
every nacked one back, no ack refused (a refused ack closes the channel), and fewer frames
than deliveries."""

from __future__ import annotations

import asyncio
import random

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from services.core.broker.acks import acker
from services.core.broker.settle import settle
from services.core.settings import Settings

COUNT = 400


async def test_scrambled_settles_on_a_shared_channel_agree_with_the_broker(
    broker_only: Settings,
) -> None:
    connection = await aio_pika.connect(broker_only.amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=64)
        queues = [
            await channel.declare_queue(f"q{i}", durable=True, arguments={"x-queue-type": "quorum"})
            for i in range(2)
        ]
        for i in range(COUNT):
            await channel.default_exchange.publish(
                aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queues[i % 2].name,
            )
        rng = random.Random(5)
        nacked: set[bytes] = {str(i).encode() for i in rng.sample(range(COUNT), 20)}
        acked: list[bytes] = []
        seen: set[bytes] = set()
        done = asyncio.Event()
        returned: list[bytes] = []
        all_returned = asyncio.Event()
        frames_before = acker().frames

        async def handle(message: AbstractIncomingMessage) -> None:
            if message.body in seen:  # a nacked one coming back: take it this time
                assert await settle(message)
                returned.append(message.body)
                if len(returned) == len(nacked):
                    all_returned.set()
                return
            seen.add(message.body)
            await asyncio.sleep(rng.random() * 0.01)  # finish out of order
            if message.body in nacked:
                assert await settle(message, requeue=True)
                return
            assert await settle(message)
            acked.append(message.body)
            if len(acked) == COUNT - len(nacked):
                done.set()

        for queue in queues:
            await queue.consume(handle)
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.wait_for(all_returned.wait(), 60)  # the requeued ones come back
        frames = acker().frames - frames_before
        assert not channel.is_closed, "the broker refused an ack"
        assert sorted(acked) == sorted({str(i).encode() for i in range(COUNT)} - nacked)
        assert sorted(returned) == sorted(nacked)
        # Closing the channel hands back whatever it still holds unacked: an ack we counted
        # but never reached the broker would show up as a message left in its queue.
        await channel.close()
        check = await connection.channel()
        for queue in queues:
            declared = await check.declare_queue(
                queue.name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            assert declared.declaration_result.message_count == 0
        # Not a speed test: the point of batching is that runs share a frame.
        assert frames < COUNT
    finally:
        await connection.close()
