"""The router service's lifespan: the host keys (to verify signatures), the registry view (with
its notice listener), the intake queue; on SIGTERM or when drained (--burst) stop intake, finish
what is in hand, close. A deployment upgraded from three hops may still have validated reports
waiting in `<ns>.router`: while that queue exists the router drains it too."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from services.core.broker.publish import DeadLetters
from services.core.broker.topology import intake, legacy_router_inbox, missing_queues
from services.core.broker.users import BrokerRole
from services.core.diagnosis import Outage
from services.core.hostkeys import load_keyring
from services.core.lifespan import (
    Consumption,
    broker,
    consume_until_stopped,
    health,
    stop_on_signals,
)
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.settings import Settings
from services.router.consumer import RouterConsumer
from services.router.directory import RouterDirectory
from services.router.handlers import AcceptUnsigned, Limits, SignatureVerifier, Verifier

log = structlog.get_logger(__name__)


def limits_from(settings: Settings) -> Limits:
    """Validation's limits, from the settings."""
    return Limits(
        max_bytes=settings.max_report_bytes,
        max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
        max_age=timedelta(seconds=settings.max_report_age_s),
    )


async def run(
    settings: Settings,
    *,
    burst: bool = False,
    stop: asyncio.Event | None = None,
    verifier: Verifier | None = None,
) -> None:
    """Run the router until stopped (or, with `burst`, until intake is drained)."""
    names = Names(settings.namespace)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    keyring = load_keyring(settings)  # fails at start-up, by name, when there is none
    if verifier is None:
        verifier = SignatureVerifier(keyring) if settings.require_signatures else AcceptUnsigned()
    directory = RouterDirectory(settings)
    await directory.start()
    consumer: RouterConsumer | None = None
    try:
        async with (
            health(settings) as readiness,
            broker(settings, "router", BrokerRole.ROUTER, stop) as channels,
        ):
            readiness.ready = True
            consumer = RouterConsumer(
                channels.publishers,
                names,
                limits_from(settings),
                verifier,
                directory,
                DeadLetters(channels.publishers, names, Stage.ROUTER),
                stop=stop,
                retry_max_s=settings.retry_max_s,
                registry_outage=Outage(
                    "router.registry_unavailable", settings, "SILOFLOW_REGISTRY_DSN"
                ),
            )
            consumptions = [Consumption(intake(names), consumer.on_report, consumer.in_flight)]
            legacy = legacy_router_inbox(names)
            if not await missing_queues(channels.connection, [legacy.name]):
                log.info("router.draining_legacy_queue", queue=legacy.name)
                consumptions.append(Consumption(legacy, consumer.on_validated, consumer.in_flight))
            log.info("router.started", queues=[c.spec.name for c in consumptions], burst=burst)
            await consume_until_stopped(channels, consumptions, stop=stop, burst=burst)
    finally:
        await directory.close()
    log.info(
        "router.stopped",
        routed=consumer.routed if consumer else 0,
        cache_hits=directory.hits,
        cache_misses=directory.misses,
    )
