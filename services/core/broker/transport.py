"""The services' AMQP socket: every frame written in one turn of the event loop leaves in one
system call. aiormq writes each frame (a publish, an ack) with a call of its own, and on the
bench's profiles the socket writes were the largest self time of every service (12-25%); a
service handling a window of deliveries writes dozens of frames a turn. Plugged in through
aiormq's own `TransportFactory` seam; TLS connections keep aiormq's factory."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import aio_pika
from aiormq.connection import TransportFactory
from yarl import URL

# asyncio.open_connection's default buffer limit for the reader
READ_LIMIT_BYTES = 2**16


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
    """Plain TCP, as aiormq's own factory, with a `CoalescingWriter`."""

    def __init__(self) -> None:
        self.writers: weakref.WeakSet[CoalescingWriter] = weakref.WeakSet()

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the connection's stream, its writer a coalescing one."""
        kwargs.pop("ssl_context_provider", None)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_LIMIT_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, host=url.host or "localhost", port=url.port or 5672, **kwargs
            )
        except OSError as exc:
            from aiormq.exceptions import AMQPConnectionError  # noqa: PLC0415

            raise AMQPConnectionError(*exc.args) from exc
        writer = CoalescingWriter(transport, protocol, reader, loop)
        self.writers.add(writer)
        return reader, writer


class CoalescingRobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection on a coalescing socket (plain `amqp://` only)."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        super().__init__(url, loop, **kwargs)
        if self.url.scheme == "amqp":
            # aio-pika passes its kwargs on to aiormq.connect, which takes the factory.
            self.kwargs["transport_factory"] = CoalescingTransportFactory()
