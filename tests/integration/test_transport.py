"""The coalescing socket against the real broker: a burst of confirmed publishes and their
acks all arrive, in far fewer system calls than publishes."""

from __future__ import annotations

import asyncio

import aio_pika

from services.core.broker.connection import connect
from services.core.broker.publish import ChannelPool, publish, publishing_channel
from services.core.broker.settle import settle
from services.core.broker.transport import CoalescingTransportFactory
from services.core.settings import Settings

COUNT = 300


async def test_a_burst_of_confirmed_publishes_leaves_in_few_writes(broker_only: Settings) -> None:
    connection = await connect(broker_only, name="transport test", role=None)
    try:
        factory = connection.kwargs["transport_factory"]  # type: ignore[attr-defined]
        assert isinstance(factory, CoalescingTransportFactory)
        (writer,) = list(factory.writers)
        channel = await publishing_channel(connection)
        pool = await ChannelPool.open(connection)
        queue = await channel.declare_queue(
            "burst", durable=True, arguments={"x-queue-type": "quorum"}
        )
        before = writer.writes
        await asyncio.gather(
            *(
                publish(
                    pool,
                    "",
                    queue.name,
                    aio_pika.Message(str(i).encode(), message_id=str(i), delivery_mode=2),
                )
                for i in range(COUNT)
            )
        )
        # Each publish is one write of its own without the pool and the coalescing socket.
        assert writer.writes - before < COUNT / 4, writer.writes - before
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=COUNT)
        got: list[str] = []
        done = asyncio.Event()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            assert await settle(message)
            got.append(message.message_id or "")
            if len(got) == COUNT:
                done.set()

        await queue.consume(take)
        await asyncio.wait_for(done.wait(), 30)
        assert sorted(got, key=int) == [str(i) for i in range(COUNT)]
        # Closing the channel hands back anything still unacked: a lost ack shows as a message.
        await consume.close()
        check = await connection.channel()
        declared = await check.declare_queue(
            "burst", durable=True, arguments={"x-queue-type": "quorum"}
        )
        assert declared.declaration_result.message_count == 0
    finally:
        await connection.close()
