"""The benchmark's baseline: what a competent engineer writes in an afternoon with aio-pika and
asyncpg, with the same durability as siloflow (quorum queues, persistent messages, publisher
confirms, ack only once the next home has the message) and none of its checks.

`forward` takes raw messages off the intake queue and republishes each, unchanged, to its
tenant's queue (host -> tenant from a map loaded at start); `write` commits each tenant's messages
as JSON rows into that tenant's database in batched transactions. Run as
`python -m services.bench.baseline forward|write JOB.json`; both stop on SIGTERM.

Since session 12 it has the generic runtime choices siloflow's services have, so the ratios are
against a tuned floor, not an untuned one: uvloop, acks sent together once per loop turn
(`core.broker.acks`, a generic aio-pika helper with no siloflow rule in it), publishes spread
over a pool of confirmed channels (`core.broker.publish.ChannelPool`), and a quiet tenant's
message committed at once instead of after the batch wait. It does not get siloflow's own socket
layer (`core.broker.transport`, a turn's frames in one write): that is siloflow's work, not an
afternoon's tuning."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import uvloop
from aio_pika.abc import AbstractIncomingMessage
from aiormq import spec

from services.core.broker import acks
from services.core.broker.publish import PERSISTENT, ChannelPool

BATCH_MAX = 200
BATCH_WAIT_S = 0.05  # a busy tenant's batch fills this long; a quiet tenant's goes at once
PREFETCH = 500
PUBLISH_CHANNELS = 8

SCHEMA = """
create table if not exists reports (
    message_id uuid primary key,
    host_id uuid not null,
    kind text not null,
    sent_at timestamptz not null,
    body jsonb not null,
    committed_at timestamptz not null default now()
)
"""
INSERT = """
insert into reports (message_id, host_id, kind, sent_at, body)
values ($1, $2, $3, $4, $5::jsonb) on conflict (message_id) do nothing
"""


def intake_queue(namespace: str) -> str:
    """The baseline's one intake queue."""
    return f"{namespace}.base.intake"


def tenant_queue(namespace: str, tenant: int) -> str:
    """The baseline's queue of one tenant (by index)."""
    return f"{namespace}.base.t{tenant}"


def exchange_name(namespace: str) -> str:
    """The exchange the baseline's reports are published to."""
    return f"{namespace}.base.in"


async def declare(amqp_url: str, namespace: str, tenants: int) -> None:
    """The baseline's topology: one exchange, the intake queue, a queue per tenant."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        quorum: dict[str, Any] = {"x-queue-type": "quorum"}
        exchange = await channel.declare_exchange(
            exchange_name(namespace), aio_pika.ExchangeType.TOPIC, durable=True
        )
        intake = await channel.declare_queue(
            intake_queue(namespace), durable=True, arguments=quorum
        )
        await intake.bind(exchange, "#")
        for tenant in range(tenants):
            await channel.declare_queue(
                tenant_queue(namespace, tenant), durable=True, arguments=quorum
            )
    finally:
        await connection.close()


async def forward(job: dict[str, Any], stop: asyncio.Event) -> None:
    """The baseline's forwarder: intake to each tenant's queue, confirmed, then acked."""
    routes = {host: tenant_queue(job["namespace"], t) for host, t in job["routes"].items()}
    connection = await aio_pika.connect(job["amqp_url"])
    try:
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=PREFETCH)
        pool = ChannelPool(
            [await connection.channel(publisher_confirms=True) for _ in range(PUBLISH_CHANNELS)]
        )
        queue = await consume.get_queue(intake_queue(job["namespace"]), ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            target = routes.get(str((message.headers or {}).get("host_id")))
            if target is None:
                await message.reject(requeue=False)
                return
            properties = spec.Basic.Properties(
                headers=message.headers,
                message_id=message.message_id,
                timestamp=message.timestamp,
                content_type=message.content_type,
                message_type=message.type,
                delivery_mode=PERSISTENT,
            )
            channel = await pool.get_underlay_channel()
            # Returns once the broker confirmed it (aiormq raises on a nack).
            await channel.basic_publish(message.body, routing_key=target, properties=properties)
            await acks.acker().ack(message)  # acked with the rest of this loop turn's

        await queue.consume(on_message)
        await stop.wait()
    finally:
        await connection.close()


async def write(job: dict[str, Any], stop: asyncio.Event) -> None:
    """The baseline's writer: each tenant's messages as JSON rows, batched per transaction."""
    namespace = job["namespace"]
    connection = await aio_pika.connect(job["amqp_url"])
    databases = [await asyncpg.connect(dsn) for dsn in job["databases"]]
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        pending: list[list[AbstractIncomingMessage]] = [[] for _ in databases]
        wake = [asyncio.Event() for _ in databases]
        loop = asyncio.get_running_loop()
        last_flush = [0.0 for _ in databases]

        async def flush(tenant: int) -> None:
            batch, pending[tenant] = pending[tenant], []
            rows = []
            for message in batch:
                report = json.loads(message.body)
                rows.append(
                    (
                        message.message_id,
                        report["host_id"],
                        message.type or report["schema"].split("/")[0],
                        _timestamp(report["sent_at"]),
                        message.body.decode(),
                    )
                )
            async with databases[tenant].transaction():
                await databases[tenant].executemany(INSERT, rows)
            last_flush[tenant] = loop.time()
            await asyncio.gather(*(acks.acker().ack(message) for message in batch))

        async def writer(tenant: int) -> None:
            while not stop.is_set():
                await wake[tenant].wait()
                wake[tenant].clear()
                quiet = loop.time() - last_flush[tenant] >= BATCH_WAIT_S
                if len(pending[tenant]) < BATCH_MAX and not quiet:
                    await asyncio.sleep(BATCH_WAIT_S)
                while pending[tenant]:
                    await flush(tenant)

        for tenant in range(len(databases)):
            queue = await channel.get_queue(tenant_queue(namespace, tenant), ensure=False)

            async def on_message(message: AbstractIncomingMessage, tenant: int = tenant) -> None:
                pending[tenant].append(message)
                wake[tenant].set()

            await queue.consume(on_message)
        tasks = [asyncio.create_task(writer(t)) for t in range(len(databases))]
        await stop.wait()
        for task in tasks:
            task.cancel()
    finally:
        await connection.close()
        for db in databases:
            await db.close()


def _timestamp(text: str) -> Any:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def main_async(role: str, job: dict[str, Any]) -> None:
    """Run one baseline role until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await (forward if role == "forward" else write)(job, stop)


def main() -> None:
    """`python -m services.bench.baseline forward|write JOB.json`."""
    role, job_path = sys.argv[1], sys.argv[2]
    if role not in ("forward", "write"):
        raise SystemExit("usage: python -m services.bench.baseline forward|write JOB.json")
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(main_async(role, json.loads(Path(job_path).read_text())))


if __name__ == "__main__":
    main()
