"""A raw-frame AMQP 0-9-1 publisher for hostile tests: the handshake and the method frames are
pamqp's, the content header is whatever bytes the test gives. Client libraries refuse to encode
what an attacker sends on purpose (a timestamp of 2**64-1, a message_id that is not UTF-8, a
table nested thousands deep, an unknown field type); RabbitMQ stores and delivers it all the
same, so this is how such a message reaches the broker in a test."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header
from pamqp import constants as c

FRAME_HEADER = struct.Struct(">BHI")
BASIC_CLASS_ID = 60
CHANNEL = 1

# Basic.Properties in wire order: (flag bit, AMQP type). A content header's property list is
# the values of the flagged ones, in this order.
PROPERTY_FLAGS = {
    "content_type": (1 << 15, "shortstr"),
    "content_encoding": (1 << 14, "shortstr"),
    "headers": (1 << 13, "table"),
    "delivery_mode": (1 << 12, "octet"),
    "priority": (1 << 11, "octet"),
    "correlation_id": (1 << 10, "shortstr"),
    "reply_to": (1 << 9, "shortstr"),
    "expiration": (1 << 8, "shortstr"),
    "message_id": (1 << 7, "shortstr"),
    "timestamp": (1 << 6, "timestamp"),
    "message_type": (1 << 5, "shortstr"),
    "user_id": (1 << 4, "shortstr"),
    "app_id": (1 << 3, "shortstr"),
    "cluster_id": (1 << 2, "shortstr"),
}


def content_header(body_size: int, encoded: list[tuple[str, bytes]]) -> bytes:
    """A content header payload: the properties named, each already encoded (any bytes)."""
    flags = 0
    for name, _ in encoded:
        flags |= PROPERTY_FLAGS[name][0]
    values = sorted(encoded, key=lambda item: -PROPERTY_FLAGS[item[0]][0])
    return struct.pack(">HHQH", BASIC_CLASS_ID, 0, body_size, flags) + b"".join(
        value for _, value in values
    )


def shortstr(raw: bytes) -> bytes:
    """An AMQP short string of these bytes (UTF-8 or not)."""
    return bytes([len(raw)]) + raw


def table(encoded_pairs: list[tuple[bytes, bytes]]) -> bytes:
    """An AMQP field table of (name, type tag + value) pairs, encoded as given."""
    payload = b"".join(shortstr(name) + value for name, value in encoded_pairs)
    return struct.pack(">I", len(payload)) + payload


def nested_table(depth: int) -> bytes:
    """A table holding a table ... `depth` deep (what pika's encoder refuses to build)."""
    inner = table([])
    for _ in range(depth):
        inner = table([(b"t", b"F" + inner)])
    return inner


def _frame(frame_type: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(frame_type, CHANNEL, len(payload)) + payload + bytes([c.FRAME_END])


class Refused(Exception):
    """Raised when the broker closed the channel or the connection instead of confirming."""


@dataclass
class RawPublisher:
    """One connection, one confirming channel; `publish` returns once the broker confirmed."""

    url: str
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _frame_max: int = 131_072
    _tag: int = 0
    _confirmed: set[int] = field(default_factory=set)

    async def __aenter__(self) -> RawPublisher:
        parts = urlsplit(self.url)
        self._reader, self._writer = await asyncio.open_connection(
            parts.hostname, parts.port or 5672
        )
        self._writer.write(c.AMQP + b"\x00\x00\x09\x01")
        await self._expect(commands.Connection.Start)
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._send_method(
            commands.Connection.StartOk(
                client_properties={"connection_name": "raw test publisher"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
                locale="en_US",
            ),
            channel=0,
        )
        tune = await self._expect(commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        self._frame_max = tune.frame_max or self._frame_max
        self._send_method(
            commands.Connection.TuneOk(channel_max=1, frame_max=self._frame_max, heartbeat=0),
            channel=0,
        )
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._send_method(commands.Connection.Open(virtual_host=vhost), channel=0)
        await self._expect(commands.Connection.OpenOk)
        self._send_method(commands.Channel.Open())
        await self._expect(commands.Channel.OpenOk)
        self._send_method(commands.Confirm.Select())
        await self._expect(commands.Confirm.SelectOk)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()

    def _send_method(self, method: commands.base.Frame, channel: int = CHANNEL) -> None:
        assert self._writer is not None
        self._writer.write(frame.marshal(method, channel))

    async def _read_frame(self) -> object:
        assert self._reader is not None
        head = await self._reader.readexactly(7)
        _, _, size = FRAME_HEADER.unpack(head)
        rest = await self._reader.readexactly(size + 1)
        return frame.unmarshal(head + rest)[2]

    async def _expect(self, kind: type) -> object:
        while True:
            got = await self._read_frame()
            if isinstance(got, kind):
                return got
            if isinstance(got, commands.Connection.Close | commands.Channel.Close):
                raise Refused(f"{got.reply_code} {got.reply_text}")

    async def publish(
        self, exchange: str, routing_key: str, header_payload: bytes, body: bytes
    ) -> None:
        """Publish one message with this raw content header; `Refused` if the broker would not
        take it. The header's body size must be len(body)."""
        assert self._writer is not None
        self._send_method(commands.Basic.Publish(exchange=exchange, routing_key=routing_key))
        self._writer.write(_frame(c.FRAME_HEADER, header_payload))
        room = self._frame_max - 8
        for start in range(0, len(body), room):
            self._writer.write(_frame(c.FRAME_BODY, body[start : start + room]))
        await self._writer.drain()
        self._tag += 1
        try:
            while self._tag not in self._confirmed:
                got = await self._read_frame()
                if isinstance(got, commands.Basic.Ack):
                    upto = got.delivery_tag
                    self._confirmed.update(range(upto if not got.multiple else 1, upto + 1))
                elif isinstance(got, commands.Basic.Nack):
                    raise Refused(f"nacked {got.delivery_tag}")
                elif isinstance(got, commands.Connection.Close | commands.Channel.Close):
                    raise Refused(f"{got.reply_code} {got.reply_text}")
        except asyncio.IncompleteReadError as exc:
            raise Refused("connection closed") from exc


def properties_payload(body_size: int, **encoded: bytes) -> bytes:
    """`content_header` with keyword arguments: property name -> its encoded bytes."""
    return content_header(body_size, list(encoded.items()))


def encoded_properties(properties: commands.Basic.Properties) -> bytes:
    """A well-formed content header's property part, as pamqp encodes it."""
    return header.ContentHeader(0, 0, properties).marshal()[12:]
