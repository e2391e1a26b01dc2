"""Content headers the services cannot decode, made into ones they can: the defence against one
malformed message stopping a consumer.

RabbitMQ stores and delivers whatever content header a publisher sends, and an agent may publish.
pamqp, inside aiormq's frame reader, fails on some of what RabbitMQ accepts (a timestamp past the
year 9999, a short string that is not UTF-8, a table nested deeper than Python's recursion
limit), and aio-pika on more; either way the whole connection drops before any siloflow code
runs, and the message comes back on reconnect until its delivery limit takes it, every other
delivery on the connection stalling meanwhile (docs/security.md, "hostile frames").

The fix sits below the decoder: the services' socket reader (`transport`) passes each content
header through `sanitize` before aiormq sees it. A header that decodes, converts the way
aio-pika converts it and encodes again (so a dead letter can carry it on) passes unchanged;
any other is replaced by one that does: the same body size, what could be read of it, and
headers saying it was undecodable, why, and its raw bytes (up to `RAW_KEPT_BYTES`). The
consumers then dead-letter it with reason `undecodable` like any other bad report. Pure: bytes
in, bytes out, a table test for each way to fail (tests/unit/test_frames.py)."""

from __future__ import annotations

import struct
from typing import Any

from aio_pika.message import Message, decode_expiration, decode_timestamp
from pamqp import commands, decode
from pamqp.header import ContentHeader

from services.core import wire

# Class id, weight, body size: the part of a content header every frame reader needs.
HEAD = struct.Struct(">HHQ")
# Tables nested deeper than this are refused: nothing siloflow reads nests at all, and code
# that walks a table (logging, JSON, the client library) recurses once per level.
MAX_TABLE_DEPTH = 16
# The raw properties kept on an undecodable message (a content header must fit in one frame of
# RabbitMQ's 128 KiB frame_max, with the dead-letter headers beside it).
RAW_KEPT_BYTES = 64 * 1024
# Properties read back from an undecodable header, when they decode on their own: what
# identifies the letter to an operator. Never reply_to (nobody answers such a message) and
# never the timestamp or the expiration (the broker or the client acts on them).
SALVAGED = ("content_type", "message_id", "message_type", "app_id", "correlation_id")


# Leaf values every step after decoding takes as they are (aio-pika, logging, encoding again).
_PLAIN = (str, int, type(None))


def _plain_and_shallow(headers: dict[str, Any]) -> bool:
    """Whether a decoded table holds only tables, arrays, strings, integers, booleans and voids,
    no deeper than `MAX_TABLE_DEPTH` (walked iteratively: no recursion). Raises past the depth.
    Anything else (bytes, floats, decimals, timestamps) is left to `check`'s exact test."""
    plain = True
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(headers, 1)]
    while stack:
        item, level = stack.pop()
        if level > MAX_TABLE_DEPTH:
            raise ValueError(f"headers nest deeper than {MAX_TABLE_DEPTH} tables")
        for value in item.values() if isinstance(item, dict) else item:
            if isinstance(value, dict | list):
                stack.append((value, level + 1))
            elif not isinstance(value, _PLAIN):
                plain = False
    return plain


def check(properties: commands.Basic.Properties) -> None:
    """Raise (with why) unless the services can take these properties: their tables are
    shallow, aio-pika converts them as it does for every delivery, and they encode again.

    The common case (plain headers, delivery mode 1 or 2, no expiration) is decided by a walk
    of the headers alone; anything else is tried for real. tests/unit/test_frames.py proves
    the two agree on hostile properties."""
    plain = properties.headers is None or _plain_and_shallow(properties.headers)
    if plain and properties.delivery_mode in (None, 1, 2) and properties.expiration is None:
        return
    # What aio_pika.IncomingMessage does with them, on every delivery.
    Message(
        b"",
        headers=properties.headers,
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        delivery_mode=properties.delivery_mode,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        expiration=decode_expiration(properties.expiration),
        message_id=properties.message_id,
        timestamp=decode_timestamp(properties.timestamp),
        type=properties.message_type,
        user_id=properties.user_id,
        app_id=properties.app_id,
    )
    properties.marshal()  # a dead letter or a forward carries them on


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _salvage(flags_and_values: bytes) -> tuple[dict[str, Any], str]:
    """The properties that decode, in wire order, up to the first that does not (every later
    one's place depends on it); and which one failed."""
    try:
        consumed, flags = ContentHeader._get_flags(flags_and_values)
    except Exception as exc:  # any failure is the finding
        return {}, f"property flags: {_why(exc)}"
    data = flags_and_values[consumed:]
    found: dict[str, Any] = {}
    for name in commands.Basic.Properties.__slots__:
        if not flags & commands.Basic.Properties.flags[name]:
            continue
        kind = getattr(commands.Basic.Properties, "_" + name)
        try:
            used, value = decode.by_type(data, kind)
        except Exception as exc:  # RecursionError too: a deep table's way to fail
            return found, f"property {name}: {_why(exc)}"
        found[name] = value
        data = data[used:]
    return found, ""


def sanitize(payload: bytes) -> bytes | None:
    """None when the content header payload is one the services can take as it is; else the
    payload of one they can, marked undecodable (see the module's docstring)."""
    if len(payload) < HEAD.size:
        return None  # not a content header RabbitMQ would send: leave it to the client
    try:
        header = ContentHeader()
        header.unmarshal(payload)
        check(header.properties)
        return None
    except Exception as exc:  # any failure (RecursionError too) is the finding
        failure = _why(exc)
    class_id, weight, body_size = HEAD.unpack_from(payload)
    raw = payload[HEAD.size :]
    found, failed_at = _salvage(raw)
    headers: dict[str, Any] = {}
    if isinstance(found.get("headers"), dict):
        try:
            check(commands.Basic.Properties(headers=found["headers"]))
            headers = dict(found["headers"])
        except Exception:  # headers that fail are left out, nothing more
            pass
    kept = {name: found[name] for name in SALVAGED if isinstance(found.get(name), str)}
    headers.update(
        {
            wire.UNDECODABLE: failed_at or failure,
            wire.RAW_PROPERTIES: bytearray(raw[:RAW_KEPT_BYTES]),
            wire.RAW_PROPERTIES_BYTES: len(raw),
        }
    )
    for candidate in (
        commands.Basic.Properties(headers=headers, **kept),
        commands.Basic.Properties(headers={k: headers[k] for k in wire.UNDECODABLE_HEADERS}),
    ):
        try:
            check(candidate)
        except Exception:  # then the plainer one below
            continue
        return HEAD.pack(class_id, weight, body_size) + candidate.marshal()
    raise AssertionError("unreachable: the marker headers alone always encode")
