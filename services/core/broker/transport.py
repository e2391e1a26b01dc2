"""The services' AMQP socket, plugged in through aiormq's own `TransportFactory` seam (plain TCP
and TLS alike), does two things aiormq's does not:

- every frame written in one turn of the event loop leaves in one system call. aiormq writes
  each frame (a publish, an ack) with a call of its own, and on the bench's profiles the socket
  writes were the largest self time of every service (12-25%); a service handling a window of
  deliveries writes dozens of frames a turn.
- every content header read passes through `frames.sanitize` before aiormq decodes it, so a
  message whose properties the client library cannot decode arrives marked undecodable instead
  of closing the connection (`SanitizingReader`)."""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections.abc import Iterable
from typing import Any, SupportsIndex

import aio_pika
import structlog
from aiormq.connection import TransportFactory
from pamqp import constants
from yarl import URL

from services.core import metrics
from services.core.broker.frames import sanitize

log = structlog.get_logger(__name__)

# Type, channel, size: the part of every AMQP frame that says how long it is.
FRAME_HEAD = struct.Struct(">BHI")
FRAME_END_BYTES = 1

# asyncio.open_connection's default buffer limit for the reader
READ_LIMIT_BYTES = 2**16


class SanitizingReader(asyncio.StreamReader):
    """A StreamReader that follows the frames going by and hands each content header to
    `frames.sanitize` whole, replacing it when it cannot be decoded; every other byte (method
    and body frames, heartbeats) passes through as it came, without being copied into a frame
    buffer: only a frame's 7-byte head and content headers are ever held back."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._held = b""  # the start of a frame not yet seen whole (a head, or a content header)
        self._passing = 0  # bytes still to pass of the frame going by
        self.replaced = 0  # content headers replaced (for tests)

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        """Pass the bytes on, with any undecodable content header among them replaced."""
        buffer = self._held + bytes(data) if self._held else bytes(data)
        self._held = b""
        out: list[bytes] = []
        start = position = 0
        end = len(buffer)
        while position < end:
            if self._passing:
                step = min(self._passing, end - position)
                position += step
                self._passing -= step
                continue
            if end - position < FRAME_HEAD.size:
                break
            kind, channel, size = FRAME_HEAD.unpack_from(buffer, position)
            whole = FRAME_HEAD.size + size + FRAME_END_BYTES
            if kind != constants.FRAME_HEADER:
                self._passing = whole
                continue
            if end - position < whole:
                break
            payload_at = position + FRAME_HEAD.size
            replacement = sanitize(buffer[payload_at : payload_at + size])
            if replacement is not None:
                out.append(buffer[start:position])
                out.append(
                    FRAME_HEAD.pack(kind, channel, len(replacement))
                    + replacement
                    + bytes([constants.FRAME_END])
                )
                start = position + whole
                self.replaced += 1
                metrics.UNDECODABLE.inc()
                log.info("amqp.undecodable_header", channel=channel, frame_bytes=whole)
            position += whole
        out.append(buffer[start:position])
        self._held = buffer[position:]
        passed = b"".join(out)
        if passed:
            super().feed_data(passed)

    def feed_eof(self) -> None:
        """What is held is passed on (the client sees a cut frame as it would), then the end."""
        if self._held:
            super().feed_data(self._held)
            self._held = b""
        super().feed_eof()


class CoalescingWriter(asyncio.StreamWriter):
    """A StreamWriter that gathers the writes of a loop turn and hands them to the transport
    together at the end of it (`close` sends what is gathered first). `drain` is left as
    asyncio's: flow control (it waits while the transport is over its high-water mark), not a
    promise that bytes left, so aiormq draining after a frame does not undo the gathering."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._gathered: list[bytes] = []
        self._flush_scheduled = False
        self._loop_ref = loop
        self.writes = 0  # calls handed to the transport (for tests)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Gather the bytes; they leave with the rest of the loop turn's."""
        self._gathered.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop_ref.call_soon(self.flush)

    def writelines(self, data: Any) -> None:
        """Gather each chunk."""
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Hand everything gathered to the transport now."""
        self._flush_scheduled = False
        gathered, self._gathered = self._gathered, []
        if gathered and not self.transport.is_closing():
            self.writes += 1
            self.transport.write(b"".join(gathered))

    def close(self) -> None:
        """Write what is gathered, then close."""
        self.flush()
        super().close()


class CoalescingTransportFactory(TransportFactory):
    """TCP or TLS, as aiormq's own factories, with a `SanitizingReader` and a
    `CoalescingWriter`."""

    def __init__(self) -> None:
        self.writers: weakref.WeakSet[CoalescingWriter] = weakref.WeakSet()

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the connection's stream, its writer a coalescing one."""
        provider = kwargs.pop("ssl_context_provider", None)
        if url.scheme == "amqps" and provider is not None:
            kwargs["ssl"] = await provider.get_context()
        loop = asyncio.get_running_loop()
        reader = SanitizingReader(READ_LIMIT_BYTES, loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        default_port = 5671 if url.scheme == "amqps" else 5672
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol,
                host=url.host or "localhost",
                port=url.port or default_port,
                **kwargs,
            )
        except OSError as exc:
            from aiormq.exceptions import AMQPConnectionError  # noqa: PLC0415

            raise AMQPConnectionError(*exc.args) from exc
        writer = CoalescingWriter(transport, protocol, reader, loop)
        self.writers.add(writer)
        return reader, writer


class CoalescingRobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection on a sanitizing, coalescing socket (`amqp://` and
    `amqps://`)."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        super().__init__(url, loop, **kwargs)
        # aio-pika passes its kwargs on to aiormq.connect, which takes the factory.
        self.kwargs["transport_factory"] = CoalescingTransportFactory()
