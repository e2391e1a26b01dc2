"""The ingest service's lifespan: connect, declare the topology, consume the intake queue, and on
SIGTERM (or, with --burst, once drained) stop intake, finish what is in hand, close."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from services.core.amqp import DeadLetters, publishing_channel
from services.core.names import Names
from services.core.outcomes import Stage
from services.core.runtime import consume_until_stopped, stop_on_signals
from services.core.settings import Settings
from services.core.topology import connect, ensure_topology, intake
from services.ingest.consumer import IngestConsumer
from services.ingest.handlers import AcceptUnsigned, Limits, Verifier

log = structlog.get_logger(__name__)


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
    names = Names(settings.namespace)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    connection = await connect(settings, name="ingest")
    try:
        await ensure_topology(settings, connection)
        publish_channel = await publishing_channel(connection)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        consumer = IngestConsumer(
            publish_channel,
            names,
            limits_from(settings),
            verifier or AcceptUnsigned(),
            DeadLetters(publish_channel, names, Stage.INGEST),
        )
        log.info("ingest.started", queue=names.intake_queue, burst=burst)
        await consume_until_stopped(
            consume_channel,
            intake(names),
            consumer.on_message,
            consumer.in_flight,
            stop=stop,
            burst=burst,
        )
    finally:
        await connection.close()
    log.info("ingest.stopped")
