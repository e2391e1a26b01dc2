"""One tenant's consumer in a worker process: collects deliveries into batches, commits each
batch in one transaction, then acks. Every outcome is decided in `_settlements` and carried out
by `settle.settled_all`: a transient failure (database down) holds the batch and retries on the
one back-off (`lifespan.retried_until_stopped`), never dead-letters; a batch that fails for a
permanent reason is retried report by report so only the bad one is dead-lettered."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, auto

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.core import metrics
from services.core.broker.publish import DeadLetters
from services.core.broker.settle import (
    ACK,
    REQUEUE,
    Settlement,
    ToDeadLetters,
    observe_lag,
    settled_all,
)
from services.core.broker.topology import consumable, tenant_queue
from services.core.catalog.live import LiveCatalog
from services.core.errors import UnreadableReport
from services.core.failures import classify
from services.core.lifespan import InFlight, Stopped, retried_until_stopped, stopped_within
from services.core.names import Names
from services.core.outcomes import Failure, Reason
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.databases import TenantDatabases
from services.workers.handlers import Report, fill_wait_s, read_report
from services.workers.store import WRITERS, commit_batch

log = structlog.get_logger(__name__)

# A report that fails alone for a reason that is neither a connection problem nor bad data gets
# this many tries before it is dead-lettered, so a poison report cannot hold a tenant forever.
SINGLE_REPORT_TRIES = 3


class Attempt(Enum):
    """How trying to commit ended, when it did not end refused."""

    COMMITTED = auto()
    STOPPED = auto()  # told to stop while the database stayed unreachable


@dataclass(frozen=True)
class Refused:
    """The database refused the reports for good (bad data): why, for the dead letter."""

    detail: str


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:800]


class CommitFailures:
    """How one commit's failed tries are said: every try a line, by its class (operators and
    the tests count a tenant's tries; a database that is down is not a bug)."""

    def __init__(self, tenant: str) -> None:
        self._tenant = tenant
        self._tries = 0

    def failed(self, exc: BaseException, *, retry_in_s: float) -> None:
        """A try failed and is made again in `retry_in_s`."""
        self._tries += 1
        if classify(exc) is Failure.UNKNOWN:
            log.warning(
                "worker.commit_failed",
                tenant=self._tenant,
                error=_first_line(exc),
                attempt=self._tries,
            )
        else:
            log.warning(
                "worker.database_unavailable",
                tenant=self._tenant,
                error=_first_line(exc),
                retry_in_s=retry_in_s,
            )

    def recovered(self) -> None:
        """The commit went through (nothing more to say: `worker.committed` says it)."""


class TenantConsumer:
    """One tenant's consumer: batches in, one commit each, acks out."""

    def __init__(
        self,
        tenant: TenantRecord,
        settings: Settings,
        databases: TenantDatabases,
        consume_channel: AbstractChannel,
        dead_letters: DeadLetters,
        *,
        catalog: LiveCatalog | None = None,
    ) -> None:
        self.tenant = tenant
        self._catalog = catalog
        self._settings = settings
        self._names = Names(settings.namespace)
        self._databases = databases
        self._channel = consume_channel
        self.dead_letters = dead_letters
        self._buffer: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tag: str | None = None
        self._last_batch_at = -math.inf  # when the last batch was settled (loop time)
        self.in_flight = InFlight()
        self.committed = 0

    @property
    def queue_name(self) -> str:
        """The tenant's queue."""
        return self._names.tenant_queue(self.tenant.slug)

    async def start(self) -> None:
        """Start consuming the tenant's queue and the batch loop."""
        queue = await consumable(self._channel, tenant_queue(self._names, self.tenant.slug))
        self._tag = await queue.consume(self._on_message)
        self._task = asyncio.create_task(self._batches(), name=f"batches:{self.tenant.slug}")
        log.info("worker.consuming", tenant=self.tenant.slug, queue=self.queue_name)

    async def stop(self) -> None:
        """Stop intake, commit or hand back what is in hand, and end the batch loop."""
        if self._tag is not None and not self._channel.is_closed:
            queue = await self._channel.get_queue(self.queue_name, ensure=False)
            try:
                await queue.cancel(self._tag)
            except Exception as exc:  # the queue may be gone (tenant deleted): nothing to cancel
                log.info("worker.cancel_failed", tenant=self.tenant.slug, error=str(exc))
        self._stopping.set()
        self._arrived.set()
        if self._task is not None:
            await self._task
        log.info("worker.stopped", tenant=self.tenant.slug, committed=self.committed)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.in_flight.started()  # finished by the batch loop once the message is settled
        observe_lag(message, "worker", self.tenant.slug)
        self._buffer.append(message)
        self._arrived.set()

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._buffer:
                # Checked before every wait, never only after one: `stop` wakes this loop once,
                # and a batch taken after that wake-up must not leave the loop waiting for a
                # delivery that, the consumer being cancelled, will never come.
                if self._stopping.is_set():
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            wait_s = fill_wait_s(
                buffered=len(self._buffer),
                batch_max=self._settings.batch_max,
                batch_wait_s=self._settings.batch_wait_s,
                quiet_s=loop.time() - self._last_batch_at,
            )
            if wait_s:
                await stopped_within(self._stopping, wait_s)  # stopping cuts the wait short
            batch = self._buffer[: self._settings.batch_max]
            del self._buffer[: len(batch)]
            try:
                settlements = await self._settlements(batch)
            except Exception:
                # A bug, not a verdict on the reports: hand them back (the delivery limit ends a
                # loop) and keep this tenant's batch loop alive.
                log.exception(
                    "worker.unexpected_error",
                    tenant=self.tenant.slug,
                    message_ids=[m.message_id for m in batch],
                )
                settlements = [(message, REQUEUE) for message in batch]
            try:
                await settled_all(self.dead_letters, settlements)
            finally:
                self._last_batch_at = loop.time()
                for _ in batch:
                    self.in_flight.finished()

    async def _settlements(
        self, batch: list[AbstractIncomingMessage]
    ) -> list[tuple[AbstractIncomingMessage, Settlement]]:
        """What becomes of each message of the batch, once its reports are committed (or
        found uncommittable, or held while the database is down and the worker stops)."""
        settlements: list[tuple[AbstractIncomingMessage, Settlement]] = []
        readable: list[tuple[AbstractIncomingMessage, Report]] = []
        for message in batch:
            try:
                report = read_report(message.message_id, message.headers or {}, message.body)
                if report.kind not in WRITERS:
                    raise UnreadableReport(
                        f"no writer for kind {report.kind!r}: this worker cannot store it "
                        "(replay it once a siloflow that knows the kind runs)"
                    )
            except UnreadableReport as exc:
                settlements.append((message, self._dead_letter(str(exc))))
                continue
            readable.append((message, report))
        if not readable:
            return settlements
        outcome = await self._commit_with_retry([r for _, r in readable])
        if not isinstance(outcome, Refused):
            # Committed: ack them all; stopped while the database is down: hand them back.
            settled = ACK if outcome is Attempt.COMMITTED else REQUEUE
            return settlements + [(message, settled) for message, _ in readable]
        # One or more reports cannot be committed: find them, one at a time.
        for message, report in readable:
            single = await self._commit_with_retry([report], tries=SINGLE_REPORT_TRIES)
            if isinstance(single, Refused):
                settlements.append((message, self._dead_letter(single.detail)))
            else:
                settlements.append((message, ACK if single is Attempt.COMMITTED else REQUEUE))
        return settlements

    async def _commit_with_retry(self, reports: list[Report], tries: int = 1) -> Attempt | Refused:
        """Committed, or refused (the error of a permanent failure), or stopped (told to stop
        while the database stays unreachable). Connection failures are retried until they
        heal; a failure of an unknown kind `tries` times."""

        def retryable(exc: BaseException, tried: int) -> bool:
            kind = classify(exc)
            return kind is Failure.TRANSIENT or (kind is Failure.UNKNOWN and tried < tries)

        try:
            done = await retried_until_stopped(
                lambda: self._commit(reports),
                retryable=retryable,
                outage=CommitFailures(self.tenant.slug),
                stop=self._stopping,
                retry_max_s=self._settings.retry_max_s,
            )
        except Exception as exc:  # refused for good, or unknown `tries` times
            if len(reports) == 1:
                log.warning(
                    "worker.report_rejected",
                    tenant=self.tenant.slug,
                    message_id=str(reports[0].message_id),
                    error=_first_line(exc),
                )
            return Refused(_first_line(exc))
        return Attempt.STOPPED if isinstance(done, Stopped) else Attempt.COMMITTED

    async def _commit(self, reports: list[Report]) -> None:
        # Not getting a connection (server down, database closed to connections, login refused
        # or not issued, even a bug in getting one) raises DatabaseUnavailable: it says nothing
        # about the reports, so they wait for the database and are never dead-lettered.
        async with self._databases.driver(self.tenant) as pg:
            index = self._catalog.index if self._catalog is not None else None
            # Atomic: one statement or a transaction (with the findings it derives).
            result = await commit_batch(pg, reports, index)
        self.committed += result.new
        metrics.labelled(metrics.COMMITS, self.tenant.slug).inc(result.new)
        metrics.labelled(metrics.REPORTS, "worker", "committed").inc(result.new)
        metrics.BATCH_SIZE.observe(len(reports))
        now = datetime.now(UTC)
        for r in result.fresh:  # a redelivered duplicate says nothing about latency
            metrics.END_TO_END.observe(max((now - r.sent_at).total_seconds(), 0.0))
        log.debug(
            "worker.committed",
            tenant=self.tenant.slug,
            new=result.new,
            duplicates=result.duplicates,
            applied=result.applied,
        )

    def _dead_letter(self, detail: str) -> ToDeadLetters:
        return ToDeadLetters(Reason.COMMIT_REJECTED, detail, {"tenant": self.tenant.slug})
