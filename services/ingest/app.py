"""The ingest service's lifespan: the intake queue (reports: validate and authenticate) and the
register queue (enrollment), until SIGTERM or, with --burst, until both are drained; then stop
intake, finish what is in hand, close."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import structlog

from services.core import wire
from services.core.amqp import DeadLetters
from services.core.broker_users import BrokerRole
from services.core.db import registry_engine
from services.core.hostkeys import Keyring, load_keyring
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.runtime import (
    Broker,
    Consumption,
    broker,
    consume_until_stopped,
    health,
    stop_on_signals,
)
from services.core.settings import Settings
from services.core.tenancy import RegistryDirectory, TenantDatabases
from services.core.topology import intake, register_inbox
from services.ingest.consumer import IngestConsumer
from services.ingest.handlers import AcceptUnsigned, Delivery, Limits, Verifier
from services.ingest.registrar import RegistrationConsumer
from services.ingest.registration import Registrar
from services.ingest.throttle import ThrottleLimits

log = structlog.get_logger(__name__)


class SignatureVerifier:
    """Checks the `signature` header against the host key derived from the server secret."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def verify(self, delivery: Delivery, host_id: uuid.UUID) -> str | None:
        signature = delivery.headers.get(wire.SIGNATURE)  # any value at all: verify judges it
        return self._keyring.verify(signature, delivery.message_id or "", host_id, delivery.body)


def limits_from(settings: Settings) -> Limits:
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
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    keyring = load_keyring(settings)  # fails at start-up, by name, when there is none
    if verifier is None:
        verifier = SignatureVerifier(keyring) if settings.require_signatures else AcceptUnsigned()
    engine = registry_engine(settings)
    databases = TenantDatabases(settings, RegistryDirectory(engine))
    try:
        async with (
            health(settings) as readiness,
            broker(settings, "ingest", BrokerRole.INGEST) as channels,
        ):
            readiness.ready = True
            await _consume(
                settings,
                channels,
                verifier,
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
    verifier: Verifier,
    registrar: Registrar,
    *,
    stop: asyncio.Event,
    burst: bool,
) -> None:
    names = Names(settings.namespace)
    dead = DeadLetters(channels.publishers, names, Stage.INGEST)
    reports = IngestConsumer(channels.publishers, names, limits_from(settings), verifier, dead)
    registrations = RegistrationConsumer(
        channels.publish,
        registrar,
        dead,
        stop=stop,
        retry_max_s=settings.retry_max_s,
        throttle=ThrottleLimits(
            free_failures=settings.registration_free_failures,
            failures_per_s=settings.registration_failures_per_s,
        ),
    )
    log.info(
        "ingest.started",
        queues=[names.intake_queue, names.register_queue],
        burst=burst,
        signatures=settings.require_signatures,
    )
    await consume_until_stopped(
        channels,
        [
            Consumption(intake(names), reports.on_message, reports.in_flight),
            Consumption(register_inbox(names), registrations.on_message, registrations.in_flight),
        ],
        stop=stop,
        burst=burst,
    )
