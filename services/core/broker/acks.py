"""Acks sent together: one `basic.ack multiple` for every run of finished deliveries instead of
one frame per delivery. Each ack frame is work for the client and, on a quorum queue, a settle
command in the broker's log; a service that finishes deliveries in about the order they came
settles most of them in a few frames (docs/performance.md).

Safety rests on one fact of AMQP 0-9-1: a channel numbers its deliveries 1, 2, 3, ... A
multiple ack of tag T settles every unsettled delivery up to T, so it is sent only when every
tag up to T is known to be finished. A delivery finished after a gap (an earlier one still in
hand) is acked alone: batching never holds an ack back behind slow work. Nacks go at once."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import AbstractChannel

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Ack:
    """Send `basic.ack` for `tag`, with `multiple` to settle everything up to it."""

    tag: int
    multiple: bool


@dataclass
class AckLedger:
    """One channel's deliveries: which are finished, and the acks that settle them. No I/O."""

    settled_through: int = 0  # every tag up to here is settled
    finished: set[int] = field(default_factory=set)  # waiting for their ack
    settled: set[int] = field(default_factory=set)  # above settled_through, settled alone

    def finish(self, tag: int) -> None:
        """The delivery may be acked (its next home has it)."""
        if tag > self.settled_through and tag not in self.settled:
            self.finished.add(tag)

    def rejected(self, tag: int) -> None:
        """The delivery was nacked (sent at once by the caller): settled, never to be acked."""
        self.finished.discard(tag)
        if tag > self.settled_through:
            self.settled.add(tag)
        self._advance()

    def acks(self) -> list[Ack]:
        """The frames that settle every finished delivery, fewest first: one multiple ack for
        the run that starts right after `settled_through`, single acks beyond a gap."""
        out: list[Ack] = []
        top = 0
        tag = self.settled_through + 1
        while tag in self.finished or tag in self.settled:
            if tag in self.finished:
                top = tag
            tag += 1
        if top:
            run = [t for t in self.finished if t <= top]
            out.append(Ack(top, multiple=len(run) > 1))
            self.finished.difference_update(run)
        self.settled_through = tag - 1
        self.settled = {t for t in self.settled if t > self.settled_through}
        for alone in sorted(self.finished):
            out.append(Ack(alone, multiple=False))
            self.settled.add(alone)
        self.finished.clear()
        self._advance()
        return out

    def _advance(self) -> None:
        while self.settled_through + 1 in self.settled:
            self.settled_through += 1
            self.settled.discard(self.settled_through)


class Acker:
    """The acks of one event loop's consume channels, sent once per loop turn: every delivery
    finished in a turn shares the turn's frames. `ack` returns once its frame is queued to
    the connection's writer, which sends frames in order (before a close, too), so a caller and
    the service's shutdown, which waits for work in hand, see what they always saw. A channel
    the client reopened (robust reconnect) numbers afresh and gets a new ledger; the broker
    redelivers whatever the old channel left unsettled."""

    def __init__(self) -> None:
        self._ledgers: dict[int, tuple[AbstractChannel, AckLedger]] = {}
        self._pending: dict[int, AbstractChannel] = {}
        self._batch: asyncio.Future[bool] | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._one_flush = asyncio.Lock()
        self.frames = 0

    def _ledger(self, channel: AbstractChannel) -> AckLedger:
        entry = self._ledgers.get(id(channel))
        if entry is None or entry[0] is not channel:
            entry = (channel, AckLedger())
            self._ledgers[id(channel)] = entry
        return entry[1]

    async def ack(self, message: AbstractIncomingMessage) -> bool:
        """Ack with this turn's batch; False if the frame could not be written (the channel is
        gone: the broker redelivers)."""
        channel = message.channel  # ChannelInvalidStateError when closed: the caller's to catch
        assert message.delivery_tag is not None
        self._ledger(channel).finish(message.delivery_tag)
        self._pending[id(channel)] = channel
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            loop.call_soon(self._start_flush)
        # Shielded: a caller cancelled while waiting must not cancel the others' batch.
        return await asyncio.shield(self._batch)

    def rejected(self, message: AbstractIncomingMessage) -> None:
        """The caller nacked the message (the frame already written)."""
        if message.delivery_tag is not None:
            self._ledger(message.channel).rejected(message.delivery_tag)

    def _start_flush(self) -> None:
        batch, self._batch = self._batch, None
        pending, self._pending = self._pending, {}
        assert batch is not None
        task = asyncio.get_running_loop().create_task(self._flush(pending, batch))
        self._flushing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._flushing.discard)

    async def _flush(
        self, pending: dict[int, AbstractChannel], batch: asyncio.Future[bool]
    ) -> None:
        ok = False  # unless every frame was queued
        try:
            ok = await self._send(pending)
        finally:  # whatever happens, nobody waits on this batch forever
            if not batch.done():
                batch.set_result(ok)

    async def _send(self, pending: dict[int, AbstractChannel]) -> bool:
        ok = True
        # One flush at a time: a later turn's multiple ack must not reach the broker before an
        # earlier turn's single ack of a tag it covers (the broker would refuse that one).
        async with self._one_flush:
            for key, channel in pending.items():
                entry = self._ledgers.get(key)
                if entry is None or entry[0] is not channel:
                    ok = False  # closed and forgotten meanwhile: the broker redelivers
                    continue
                ledger = entry[1]
                try:
                    for ack in ledger.acks():
                        self.frames += 1
                        # wait=False: queued to the connection's writer in order, not one
                        # loop turn per frame (waiting for each to be written held every
                        # settle of the process behind the lock, frame by frame).
                        await channel.basic_ack(
                            delivery_tag=ack.tag, multiple=ack.multiple, wait=False
                        )
                except Exception as exc:  # a channel that is gone: its deliveries come back
                    log.warning("amqp.ack_failed", error=str(exc))
                    ok = False
            self._ledgers = {k: v for k, v in self._ledgers.items() if not v[0].is_closed}
        return ok


class _PerLoop:
    """The Acker of each event loop, the last one asked for at hand: a process runs one loop,
    and every settle asks (a weak-keyed lookup alone costs a weak reference per call)."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Acker] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], Acker] | None = None

    def get(self) -> Acker:
        loop = asyncio.get_running_loop()
        if self._last is not None and self._last[0]() is loop:
            return self._last[1]
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = Acker()
        self._last = (weakref.ref(loop), found)
        return found


_ACKERS = _PerLoop()


def acker() -> Acker:
    """The running event loop's Acker (every consume channel of a process shares it)."""
    return _ACKERS.get()
