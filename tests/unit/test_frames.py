"""The content-header sanitizer (services/core/broker/frames.py), one row per way a header can
defeat the client library, and the socket reader that applies it to a stream of frames cut at
every possible place."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.header import ContentHeader

from services.core import wire
from services.core.broker.frames import MAX_TABLE_DEPTH, RAW_KEPT_BYTES, sanitize
from services.core.broker.transport import SanitizingReader
from tests.rawamqp import nested_table, properties_payload, shortstr, table


def decoded(payload: bytes) -> ContentHeader:
    header = ContentHeader()
    header.unmarshal(payload)
    return header


GOOD = ContentHeader(
    0,
    7,
    commands.Basic.Properties(
        content_type="application/json",
        message_id="5b0c6c0e-8f33-4a51-9d0e-5d3c8f0d5a11",
        headers={"host_id": "h", "signature": "v1:abc", "n": 5, "nested": {"a": [1, 2]}},
        delivery_mode=2,
    ),
).marshal()


def test_a_header_the_client_can_take_passes_unchanged() -> None:
    assert sanitize(GOOD) is None


@pytest.mark.parametrize(
    ("properties", "failing"),
    [
        ({"timestamp": struct.pack(">Q", 2**64 - 1)}, "timestamp"),
        ({"message_id": shortstr(b"\xff\xfe-not-utf8")}, "message_id"),
        ({"content_type": shortstr(b"\xc3")}, "content_type"),
        ({"headers": nested_table(3000)}, "headers"),
        ({"headers": table([(b"t", b"Z")])}, "headers"),  # a field type nobody knows
        ({"headers": table([(b"\xff", b"t\x01")])}, "headers"),  # a key that is not UTF-8
        ({"headers": b"\x00\x00\x01\x00abc"}, "headers"),  # a table longer than its bytes
    ],
)
def test_an_undecodable_header_becomes_a_marked_one(
    properties: dict[str, bytes], failing: str
) -> None:
    payload = properties_payload(7, **properties)
    replaced = sanitize(payload)
    assert replaced is not None
    header = decoded(replaced)
    assert header.body_size == 7  # the body frames that follow still fit
    headers = header.properties.headers
    assert (
        failing in headers[wire.UNDECODABLE] or "headers nest deeper" in headers[wire.UNDECODABLE]
    )
    assert headers[wire.RAW_PROPERTIES] == payload[12:]
    assert headers[wire.RAW_PROPERTIES_BYTES] == len(payload) - 12
    assert sanitize(replaced) is None  # and the replacement itself is taken as it is


def test_what_decodes_before_the_failure_is_kept_to_identify_the_letter() -> None:
    payload = properties_payload(
        2,
        message_id=shortstr(b"m-1"),
        headers=table([(b"host_id", b"S" + struct.pack(">I", 3) + b"abc")]),
        timestamp=struct.pack(">Q", 2**64 - 1),
    )
    header = decoded(sanitize(payload) or b"")
    assert header.properties.message_id == "m-1"
    assert header.properties.headers["host_id"] in ("abc", b"abc")
    assert header.properties.timestamp is None
    assert "timestamp" in header.properties.headers[wire.UNDECODABLE]


def test_tables_deeper_than_the_bound_are_undecodable_even_when_pamqp_reads_them() -> None:
    shallow = properties_payload(0, headers=nested_table(MAX_TABLE_DEPTH - 1))
    deep = properties_payload(0, headers=nested_table(MAX_TABLE_DEPTH + 1))
    assert sanitize(shallow) is None
    replaced = sanitize(deep)
    assert replaced is not None
    assert "nest deeper" in decoded(replaced).properties.headers[wire.UNDECODABLE]


def test_raw_bytes_are_kept_up_to_the_bound() -> None:
    huge = table([(b"k%d" % i, b"S" + struct.pack(">I", 200) + b"\xff" * 200) for i in range(600)])
    payload = properties_payload(0, headers=huge, message_id=shortstr(b"\xff"))
    header = decoded(sanitize(payload) or b"")
    assert len(header.properties.headers[wire.RAW_PROPERTIES]) == RAW_KEPT_BYTES
    assert header.properties.headers[wire.RAW_PROPERTIES_BYTES] == len(payload) - 12


def frames_of(payloads: list[bytes]) -> bytes:
    """A delivery stream: for each header payload, a Basic.Deliver, the header, a body frame."""
    out = b""
    for i, payload in enumerate(payloads):
        body_size = struct.unpack_from(">Q", payload, 4)[0]
        out += frame.marshal(commands.Basic.Deliver("c", i + 1, False, "x", "report.heartbeat"), 1)
        out += struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
        out += struct.pack(">BHI", 3, 1, body_size) + b"b" * body_size + b"\xce"
    return out


async def read_all(stream: bytes, cuts: list[int]) -> bytes:
    reader = SanitizingReader(2**16, asyncio.get_running_loop())
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        reader.feed_data(stream[last:cut])
        last = cut
    reader.feed_eof()
    return await reader.read()


BAD = properties_payload(7, timestamp=struct.pack(">Q", 2**64 - 1))


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(frames_of([GOOD, BAD, GOOD])))))
async def test_the_reader_replaces_bad_headers_however_the_stream_is_cut(cuts: list[int]) -> None:
    stream = frames_of([GOOD, BAD, GOOD])
    expected = frames_of([GOOD, sanitize(BAD) or b"", GOOD])
    assert await read_all(stream, cuts) == expected


async def test_a_stream_of_good_frames_passes_byte_for_byte() -> None:
    stream = frames_of([GOOD] * 50)
    assert await read_all(stream, list(range(0, len(stream), 97))) == stream
