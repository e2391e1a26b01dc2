"""The ingest service's lifespan: enrollment. It answers registration requests on the register
queue (the token, the throttle, the registrar) until SIGTERM or, with --burst, until the queue is
drained; then stops intake, finishes what is in hand, closes. Reports never pass through it: the
router validates them."""

from __future__ import annotations

import asyncio

import structlog

from services.core.broker.publish import DeadLetters
from services.core.broker.topology import register_inbox
from services.core.broker.users import BrokerRole
from services.core.db import registry_engine
from services.core.diagnosis import Outage
from services.core.hostkeys import load_keyring
from services.core.lifespan import (
    Broker,
    Consumption,
    broker,
    consume_until_stopped,
    health,
    registry_answers,
    stop_on_signals,
)
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.core.throttle import ThrottleLimits
from services.ingest.consumer import RegistrationConsumer
from services.ingest.registrar import Registrar

log = structlog.get_logger(__name__)


async def run(
    settings: Settings, *, burst: bool = False, stop: asyncio.Event | None = None
) -> None:
    """Run ingest until stopped (or, with `burst`, until the register queue is drained)."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    keyring = load_keyring(settings)  # fails at start-up, by name, when there is none
    engine = registry_engine(settings)
    databases = TenantDatabases(settings, RegistryDirectory(engine))
    try:
        async with health(settings) as readiness:
            await registry_answers(settings, engine, "ingest", stop)
            async with broker(settings, "ingest", BrokerRole.INGEST, stop) as channels:
                readiness.ready = True
                await _consume(
                    settings,
                    channels,
                    Registrar(engine, databases, keyring),
                    stop=stop,
                    burst=burst,
                )
    finally:
        await databases.close()
        await engine.dispose()
    log.info("ingest.stopped")


async def _consume(
    settings: Settings,
    channels: Broker,
    registrar: Registrar,
    *,
    stop: asyncio.Event,
    burst: bool,
) -> None:
    names = Names(settings.namespace)
    registrations = RegistrationConsumer(
        channels.publish,
        registrar,
        DeadLetters(channels.publishers, names, Stage.INGEST),
        stop=stop,
        retry_max_s=settings.retry_max_s,
        outage=Outage("registration.database_unavailable", settings, "SILOFLOW_REGISTRY_DSN"),
        throttle=ThrottleLimits(
            free_failures=settings.registration_free_failures,
            failures_per_s=settings.registration_failures_per_s,
        ),
    )
    log.info("ingest.started", queues=[names.register_queue], burst=burst)
    await consume_until_stopped(
        channels,
        [Consumption(register_inbox(names), registrations.on_message, registrations.in_flight)],
        stop=stop,
        burst=burst,
    )
