"""What every service's lifespan shares: stop on SIGTERM/SIGINT, count work in flight, and the
`--burst` mode that drains the queues, then exits (tests run without sleeps)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core import backoff
from services.core.broker.connection import connect
from services.core.broker.publish import ChannelPool, publishing_channel
from services.core.broker.topology import QueueSpec, consumable, missing_queues
from services.core.broker.users import BrokerRole, amqp_url, user_of
from services.core.diagnosis import Outage
from services.core.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    ServiceStopped,
    TopologyMissing,
)
from services.core.metrics import HealthServer
from services.core.names import Names
from services.core.settings import Settings

log = structlog.get_logger(__name__)

BURST_CHECK_S = 0.1
# Consecutive idle checks before a burst ends: a delivery already on the wire shows in neither
# the queue's ready count nor our in-flight count, so one idle look is not enough.
BURST_IDLE_CHECKS = 3


class InFlight:
    """Counts messages being handled, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        """One more message in hand (`finished` when it is settled)."""
        self._count += 1
        self._idle.clear()

    def finished(self) -> None:
        """A message in hand was settled."""
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    def __enter__(self) -> InFlight:
        self.started()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished()

    @property
    def count(self) -> int:
        """Messages in hand now."""
        return self._count

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is in hand; False if that took longer than `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` (a backoff, a sweep interval); True if told to stop meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until any of the events is set, or `timeout_s` has passed."""
    tasks = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (the service then drains and exits)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests): no signals
            return


async def ready_count(channel: AbstractChannel, queue: str) -> int:
    """Messages waiting in a queue (not counting deliveries in flight). Asked of the broker each
    time: aio-pika's robust channel keeps the first declaration's answer for a queue."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue, passive=True)
    return int(declared.message_count or 0)


async def wait_drained(
    channel: AbstractChannel, queues: Iterable[str], busy: list[InFlight] | InFlight
) -> None:
    """Return once the queues are empty and nothing is in flight, several checks in a row."""
    counters = busy if isinstance(busy, list) else [busy]
    idle_checks = 0
    while idle_checks < BURST_IDLE_CHECKS:
        await asyncio.sleep(BURST_CHECK_S)
        waiting = 0
        for queue in list(queues):
            waiting += await ready_count(channel, queue)
        if waiting == 0 and all(c.count == 0 for c in counters):
            idle_checks += 1
        else:
            idle_checks = 0


@dataclass(frozen=True)
class Consumption:
    """One queue a service consumes, and how."""

    spec: QueueSpec
    callback: Callable[[AbstractIncomingMessage], Awaitable[None]]
    in_flight: InFlight


async def consume_until_stopped(
    channels: Broker,
    consumptions: list[Consumption],
    *,
    stop: asyncio.Event,
    burst: bool,
    drain_timeout_s: float = 30.0,
) -> None:
    """Consume the queues until `stop` is set (or, in burst mode, until they are drained), then
    stop intake and wait for the messages in hand to finish. `TopologyMissing` if a queue is
    not there."""
    missing = await missing_queues(channels.connection, [c.spec.name for c in consumptions])
    if missing:
        raise TopologyMissing(missing)
    channel = channels.consume
    tags = []
    for consumption in consumptions:
        queue = await consumable(channel, consumption.spec)
        tags.append((queue, await queue.consume(consumption.callback)))
    names = [c.spec.name for c in consumptions]
    counters = [c.in_flight for c in consumptions]
    try:
        if burst:
            drained = asyncio.create_task(wait_drained(channel, names, counters))
            stopped = asyncio.create_task(stop.wait())
            done, pending = await asyncio.wait(
                {drained, stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for task in done:
                task.result()
        else:
            await stop.wait()
    finally:
        for queue, tag in tags:
            if not channel.is_closed:
                await queue.cancel(tag)
        for name, counter in zip(names, counters, strict=True):
            if not await counter.wait_idle(drain_timeout_s):
                log.warning("shutdown.in_flight_abandoned", queue=name, count=counter.count)


class Readiness:
    """Whether a service is doing its job (for /readyz): set once it consumes, cleared when it
    stops."""

    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> bool:
        """Whether the service is ready now."""
        return self.ready


@asynccontextmanager
async def health(settings: Settings) -> AsyncIterator[Readiness]:
    """Serve /metrics, /healthz and /readyz on `metrics_port` (if set) while the block runs."""
    readiness = Readiness()
    server = HealthServer(settings.metrics_port, readiness)
    await server.start()
    try:
        yield readiness
    finally:
        readiness.ready = False
        await server.close()


@dataclass(frozen=True)
class Broker:
    """A service's broker connection: one channel that publishes (confirmed, returns raise) and
    one that consumes (with the prefetch window)."""

    connection: AbstractRobustConnection
    publish: AbstractChannel
    consume: AbstractChannel
    publishers: ChannelPool  # what the hot path publishes through


T = TypeVar("T")


class Stopped:
    """What `retried_until_stopped` returns when told to stop before its attempt succeeded."""


STOPPED = Stopped()


class Said(Protocol):
    """How a retry loop's failures and recovery are said (`diagnosis.Outage`: the first failure
    loudly, the rest quietly; the workers' commits: every try, with its class)."""

    def failed(self, exc: BaseException, *, retry_in_s: float) -> None:
        """An attempt failed and is tried again in `retry_in_s`."""
        ...

    def recovered(self) -> None:
        """An attempt succeeded."""
        ...


async def retried_until_stopped(
    attempt: Callable[[], Awaitable[T]],
    *,
    retryable: Callable[[BaseException, int], bool],
    outage: Said,
    stop: asyncio.Event,
    retry_max_s: float,
) -> T | Stopped:
    """`attempt`, until it succeeds: a failure `retryable` accepts (given the failure and how
    many tries it makes, from 1) is said through `outage` and tried again on the one back-off
    (`backoff.delays`); any other failure is raised. `STOPPED` if `stop` is set while waiting
    to try again. The one retry loop of the services: waiting for the broker or the registry at
    start, the router's lookups, ingest's registrations, the workers' commits."""
    for tries, delay in enumerate(backoff.delays(retry_max_s), start=1):
        try:
            result = await attempt()
        except Exception as exc:
            if not retryable(exc, tries):
                raise
            outage.failed(exc, retry_in_s=delay)
            if await stopped_within(stop, delay):
                return STOPPED
            continue
        outage.recovered()
        return result
    raise AssertionError("unreachable: the delays never end")


async def _waited_for(
    attempt: Callable[[], Awaitable[T]],
    failures: tuple[type[BaseException], ...],
    outage: Outage,
    stop: asyncio.Event | None,
    settings: Settings,
    what: str,
) -> T:
    """`attempt`, waited for until `stop` (`retried_until_stopped`), which raises
    `ServiceStopped`. Without `stop`, the first failure raises."""
    if stop is None:
        return await attempt()
    result = await retried_until_stopped(
        attempt,
        retryable=lambda exc, _: isinstance(exc, failures),
        outage=outage,
        stop=stop,
        retry_max_s=settings.retry_max_s,
    )
    if isinstance(result, Stopped):
        raise ServiceStopped(f"stopped while waiting for {what}")
    return result


async def registry_answers(
    settings: Settings, engine: AsyncEngine, name: str, stop: asyncio.Event
) -> None:
    """Return once the registry database answers; until then say it once (naming the setting
    and what to do) and retry quietly with back-off, or raise `ServiceStopped` on `stop`. A
    service that needs the registry for its first message checks before it takes one."""

    async def answers() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    await _waited_for(
        answers,
        (DatabaseUnavailable, DBAPIError, OSError),
        Outage("registry.unavailable", settings, "SILOFLOW_REGISTRY_DSN", service=name),
        stop,
        settings,
        "the registry",
    )


@asynccontextmanager
async def broker(
    settings: Settings, name: str, role: BrokerRole, stop: asyncio.Event | None = None
) -> AsyncIterator[Broker]:
    """Connect as the service's broker user (waiting for the broker until `stop`, if given),
    open both channels; close on exit. Declares nothing: the service holds no right to (see
    `broker_users`)."""
    # A broker out of reach is waited for; a refused login is not (`BrokerLoginRefused`: a
    # setting is wrong).
    connection = await _waited_for(
        lambda: connect(settings, name=name, role=role),
        (BrokerUnavailable,),
        Outage("broker.unavailable", settings, "SILOFLOW_AMQP_URL", service=name),
        stop,
        settings,
        "RabbitMQ",
    )
    user = user_of(amqp_url(settings, role))
    if user != Names(settings.namespace).broker_user(role.value):
        # Allowed (an operator may hand each service its own URL), but say so: a shared or
        # administrator login gives this service rights it never uses.
        log.warning(
            "broker.not_a_role_user",
            user=user,
            role=role.value,
            hint="run `siloflow bootstrap` to create least-privilege broker users",
        )
    try:
        publish = await publishing_channel(connection)
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=settings.prefetch)
        yield Broker(connection, publish, consume, await ChannelPool.open(connection))
    finally:
        await connection.close()
