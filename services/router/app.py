"""The router service's lifespan: the registry view (with its notice listener), the topology,
the router inbox; on SIGTERM or when drained (--burst) stop intake, finish, close."""

from __future__ import annotations

import asyncio

import structlog

from services.core.amqp import DeadLetters, publishing_channel
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.runtime import Consumption, consume_until_stopped, stop_on_signals
from services.core.settings import Settings
from services.core.topology import connect, ensure_topology, router_inbox
from services.router.consumer import RouterConsumer
from services.router.directory import RouterDirectory

log = structlog.get_logger(__name__)


async def run(
    settings: Settings, *, burst: bool = False, stop: asyncio.Event | None = None
) -> None:
    names = Names(settings.namespace)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    directory = RouterDirectory(settings)
    await directory.start()
    consumer: RouterConsumer | None = None
    connection = await connect(settings, name="router")
    try:
        await ensure_topology(settings, connection)
        publish_channel = await publishing_channel(connection)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        consumer = RouterConsumer(
            publish_channel,
            names,
            directory,
            DeadLetters(publish_channel, names, Stage.ROUTER),
            stop=stop,
            retry_max_s=settings.retry_max_s,
        )
        log.info("router.started", queue=names.router_queue, burst=burst)
        await consume_until_stopped(
            consume_channel,
            [Consumption(router_inbox(names), consumer.on_message, consumer.in_flight)],
            stop=stop,
            burst=burst,
        )
    finally:
        await connection.close()
        await directory.close()
    log.info(
        "router.stopped",
        routed=consumer.routed if consumer else 0,
        cache_hits=directory.hits,
        cache_misses=directory.misses,
    )
