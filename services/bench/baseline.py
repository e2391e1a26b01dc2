"""The benchmark's baseline: what a competent engineer writes in an afternoon with aio-pika and
asyncpg, with the same durability as siloflow (quorum queues, persistent messages, publisher
confirms, ack only once the next home has the message) and none of its checks.

`forward` takes raw messages off the intake queue and republishes each, unchanged, to its
tenant's queue (host -> tenant from a map loaded at start); `write` commits each tenant's messages
as JSON rows into that tenant's database in batched transactions. Run as
`python -m services.bench.baseline forward|write JOB.json`; both stop on SIGTERM."""

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
from aio_pika.abc import AbstractIncomingMessage

BATCH_MAX = 200
BATCH_WAIT_S = 0.05
PREFETCH = 500

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
        publish = await connection.channel(publisher_confirms=True)
        queue = await consume.get_queue(intake_queue(job["namespace"]), ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            target = routes.get(str((message.headers or {}).get("host_id")))
            if target is None:
                await message.reject(requeue=False)
                return
            out = aio_pika.Message(
                message.body,
                headers=message.headers,
                message_id=message.message_id,
                timestamp=message.timestamp,
                content_type=message.content_type,
                type=message.type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await publish.default_exchange.publish(out, routing_key=target)  # confirmed
            await message.ack()

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
            for message in batch:
                await message.ack()

        async def writer(tenant: int) -> None:
            while not stop.is_set():
                await wake[tenant].wait()
                wake[tenant].clear()
                if len(pending[tenant]) < BATCH_MAX:
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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(role, json.loads(Path(job_path).read_text())))


if __name__ == "__main__":
    main()
