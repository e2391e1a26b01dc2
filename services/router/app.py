"""The router service's lifespan: the registry view (with its notice listener), the topology,
the router inbox; on SIGTERM or when drained (--burst) stop intake, finish, close."""

from __future__ import annotations

import asyncio

import structlog

from services.core.amqp import DeadLetters
from services.core.broker_users import BrokerRole
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.runtime import (
    Consumption,
    broker,
    consume_until_stopped,
    health,
    stop_on_signals,
)
from services.core.settings import Settings
from services.core.topology import router_inbox
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
    try:
        async with (
            health(settings) as readiness,
            broker(settings, "router", BrokerRole.ROUTER) as channels,
        ):
            readiness.ready = True
            consumer = RouterConsumer(
                channels.publishers,
                names,
                directory,
                DeadLetters(channels.publishers, names, Stage.ROUTER),
                stop=stop,
                retry_max_s=settings.retry_max_s,
            )
            log.info("router.started", queue=names.router_queue, burst=burst)
            await consume_until_stopped(
                channels,
                [Consumption(router_inbox(names), consumer.on_message, consumer.in_flight)],
                stop=stop,
                burst=burst,
            )
    finally:
        await directory.close()
    log.info(
        "router.stopped",
        routed=consumer.routed if consumer else 0,
        cache_hits=directory.hits,
        cache_misses=directory.misses,
    )
