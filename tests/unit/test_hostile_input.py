"""Hostile input, property-based, through the real signature verifier with real host keys:
whatever arrives, the router's validation is an answer (accepted, or rejected with a reason and a
detail), never an exception; a hostile signature header is `bad-signature`; oversized bodies are
refused before anything parses them; an accepted report means exactly what it says, and a
correctly signed one is accepted."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.reports import REPORT_MODELS
from services.core.hostkeys import Keyring, sign
from services.core.outcomes import Reason
from services.router import handlers
from services.router.handlers import (
    Accepted,
    AcceptUnsigned,
    Delivery,
    Limits,
    Rejected,
    SignatureVerifier,
    validate,
)
from tests.reports import BUILDERS

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LIMITS = Limits(
    max_bytes=256 * 1024, max_clock_skew=timedelta(minutes=5), max_age=timedelta(days=30)
)
KINDS = sorted(REPORT_MODELS)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
header_values = (
    st.none()
    | st.text(max_size=60)
    | st.binary(max_size=60)
    | st.integers(-(2**63), 2**63 - 1)  # what an AMQP header can carry
    | st.booleans()
    | st.lists(st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3)  # a table
    | st.uuids().map(str)
)
# Signature headers shaped like the real thing, then broken: digits Python's isdigit() accepts
# but int() refuses or reads otherwise, versions thousands of digits long, base64 gone wrong.
UNICODE_DIGITS = "²³¹٣۴߅०১੭૩୬௫౪೮൯๓໕༣၇႒០᠕"
hostile_signatures = (
    header_values
    | st.builds(
        lambda digits, mac: f"v{digits}:{mac}",
        st.text(alphabet=UNICODE_DIGITS + "0123456789", min_size=1, max_size=12),
        st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=50),
    )
    | st.integers(10, 20_000).map(lambda n: "v" + "9" * n + ":" + "A" * 44)
    | st.sampled_from(["", "v", "v1", "v1:", ":", "v1:!!!!", "V1:AAAA", "v01:AAAA", "v-1:AAAA"])
    | st.text(max_size=60).map(lambda t: "v1:" + t)
    | st.binary(max_size=60).map(lambda b: b"v1:" + b)
)

SECRET = bytes(range(32))
KEYRING = Keyring({1: SECRET, 2: bytes(range(32, 64))})
VERIFIER = SignatureVerifier(KEYRING)


def signed(delivery: Delivery) -> Delivery:
    """The delivery as its host would sign it (headers naming a host id that can sign)."""
    host = uuid.UUID(str(delivery.headers["host_id"]))
    signature = sign(
        KEYRING.host_key(host, 1), 1, delivery.message_id or "", str(host), delivery.body
    )
    return replace(delivery, headers={**delivery.headers, "signature": signature})


def can_sign(delivery: Delivery) -> bool:
    value = delivery.headers.get("host_id")
    if not isinstance(value, str) or not value.isascii():
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def bodies(draw: st.DrawFn, host: uuid.UUID, kind: str) -> bytes:
    """Anything from random bytes to a well-formed report, or one with a field gone wrong."""
    choice = draw(st.sampled_from(range(8)))
    if choice == 0:
        return draw(st.binary(max_size=2000))
    if choice == 1:  # invalid UTF-8 inside otherwise plausible JSON
        return b'{"schema": "heartbeat/v1", "x": "\xff\xfe' + draw(st.binary(max_size=20)) + b'"}'
    if choice == 2:
        return nested(draw(st.integers(1, 100_000)))
    if choice == 3:
        return json.dumps(draw(json_values)).encode()
    document: dict[str, Any] = {
        "schema": f"{kind}/v1",
        "host_id": str(host),
        "sent_at": (NOW - timedelta(seconds=5)).isoformat(),
        "data": BUILDERS[kind](),
    }
    if choice == 4:  # one field replaced by anything at all
        field = draw(st.sampled_from([*document, "extra"]))
        document[field] = draw(json_values)
    elif choice == 5:  # timestamps anywhere from year 1 to year 9999
        moment = draw(st.datetimes(timezones=st.just(UTC)))
        document["sent_at"] = moment.isoformat()
    elif choice == 6:  # huge strings and arrays inside the data
        document["data"] = {
            "blob": "x" * draw(st.integers(0, 300_000)),
            "list": [0] * draw(st.integers(0, 50_000)),
        }
    return json.dumps(document).encode()


PARTS = ("routing_key", "message_id", "content_type", "type", "headers")


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    """A report's envelope and body, with none, one or two parts of the envelope hostile; signed
    by its host where the headers let it be, else with a hostile signature."""
    delivery = draw(unsigned_deliveries())
    if can_sign(delivery) and draw(st.booleans()):
        return signed(delivery)
    return replace(delivery, headers={**delivery.headers, "signature": draw(hostile_signatures)})


@st.composite
def unsigned_deliveries(draw: st.DrawFn) -> Delivery:
    """A report's envelope and body, with none, one or two parts of the envelope hostile."""
    host, kind = draw(st.uuids()), draw(st.sampled_from(KINDS))
    hostile = draw(st.sets(st.sampled_from(PARTS), max_size=2))
    good: dict[str, Any] = {
        "routing_key": f"report.{kind}",
        "message_id": str(draw(st.uuids())),
        "content_type": "application/json",
        "type": None,
        "headers": {"host_id": str(host)},
    }
    anything = {
        "routing_key": st.text(max_size=40),
        "message_id": st.none() | st.text(max_size=40),
        "content_type": st.none() | st.text(max_size=20),
        "type": st.sampled_from(KINDS) | st.text(max_size=12),
        "headers": st.dictionaries(st.text(max_size=12), header_values, max_size=4)
        | st.fixed_dictionaries({"host_id": header_values}),
    }
    parts = {p: draw(anything[p]) if p in hostile else good[p] for p in PARTS}
    return Delivery(**parts, body=draw(bodies(host, kind)))


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(deliveries())
def test_every_delivery_gets_an_answer(delivery: Delivery) -> None:
    outcome = validate(delivery, now=NOW, limits=LIMITS, verifier=VERIFIER)
    if isinstance(outcome, Rejected):
        assert isinstance(outcome.reason, Reason)
        assert outcome.detail
        assert len(outcome.detail) < 4000, "a detail must not echo the whole input"
        return
    assert isinstance(outcome, Accepted)
    # Accepted means exactly what it says: the routing key names the kind, the header and the
    # body name the same host, and the clock is within limits.
    assert delivery.routing_key == f"report.{outcome.kind}"
    assert str(outcome.host_id) == str(delivery.headers["host_id"]).lower()
    assert str(outcome.message_id) == str(uuid.UUID(str(delivery.message_id)))
    assert NOW - LIMITS.max_age <= outcome.sent_at <= NOW + LIMITS.max_clock_skew
    assert json.loads(delivery.body)["host_id"].lower() == str(outcome.host_id)
    # ... and it is the host's own: signed with its key, over these very bytes.
    assert delivery.headers["signature"] == signed(delivery).headers["signature"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.uuids(), st.uuids(), hostile_signatures)
def test_a_hostile_signature_header_is_bad_signature(
    kind: str, host: uuid.UUID, message_id: uuid.UUID, signature: object
) -> None:
    delivery = good_report(kind, host, message_id)
    outcome = validate(
        replace(delivery, headers={**delivery.headers, "signature": signature}),
        now=NOW,
        limits=LIMITS,
        verifier=VERIFIER,
    )
    assert isinstance(outcome, Rejected), signature
    assert outcome.reason is Reason.BAD_SIGNATURE
    assert len(outcome.detail) < 200, "the detail names the problem, never echoes the input"


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(KINDS), st.uuids(), st.uuids())
def test_a_correctly_signed_report_passes(
    kind: str, host: uuid.UUID, message_id: uuid.UUID
) -> None:
    outcome = validate(
        signed(good_report(kind, host, message_id)), now=NOW, limits=LIMITS, verifier=VERIFIER
    )
    assert isinstance(outcome, Accepted), outcome
    assert (outcome.kind, outcome.host_id, outcome.message_id) == (kind, host, message_id)


def test_a_signature_by_another_hosts_key_or_an_unknown_version_is_refused() -> None:
    host, other = uuid.uuid4(), uuid.uuid4()
    delivery = good_report("heartbeat", host, uuid.uuid4())
    mac_of = {
        "another host's key": sign(
            KEYRING.host_key(other, 1), 1, delivery.message_id or "", str(host), delivery.body
        ),
        "an unknown version": sign(
            KEYRING.host_key(host), 3, delivery.message_id or "", str(host), delivery.body
        ),
        "another body": sign(
            KEYRING.host_key(host, 1), 1, delivery.message_id or "", str(host), delivery.body + b" "
        ),
    }
    for why, signature in mac_of.items():
        outcome = validate(
            replace(delivery, headers={**delivery.headers, "signature": signature}),
            now=NOW,
            limits=LIMITS,
            verifier=VERIFIER,
        )
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.BAD_SIGNATURE, why


def good_report(kind: str, host: uuid.UUID, message_id: uuid.UUID) -> Delivery:
    body = {
        "schema": f"{kind}/v1",
        "host_id": str(host),
        "sent_at": (NOW - timedelta(seconds=5)).isoformat(),
        "data": BUILDERS[kind](),
    }
    return Delivery(
        f"report.{kind}",
        str(message_id),
        "application/json",
        kind,
        {"host_id": str(host)},
        json.dumps(body).encode(),
    )


@settings(max_examples=50, deadline=None)
@given(
    st.integers(LIMITS.max_bytes + 1, 4 * LIMITS.max_bytes), st.sampled_from([b"[", b"{", b"\xff"])
)
def test_oversized_bodies_are_refused_unparsed(size: int, filler: bytes) -> None:
    parsed: list[bytes] = []

    class Spy:
        @staticmethod
        def model_validate_json(raw: bytes) -> Any:
            parsed.append(raw)
            raise AssertionError("parsed an oversized body")

    original = handlers.REPORT_MODELS
    handlers.REPORT_MODELS = {k: Spy for k in original}  # type: ignore[misc]
    try:
        outcome = validate(
            Delivery(
                "report.heartbeat",
                str(uuid.uuid4()),
                None,
                None,
                {"host_id": str(uuid.uuid4())},
                filler * size,
            ),
            now=NOW,
            limits=LIMITS,
            verifier=AcceptUnsigned(),
        )
    finally:
        handlers.REPORT_MODELS = original
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.TOO_LARGE
    assert not parsed


def test_deep_nesting_is_rejected_not_a_crash() -> None:
    for depth in (10, 1_000, 100_000):
        outcome = validate(
            Delivery(
                "report.heartbeat",
                str(uuid.uuid4()),
                "application/json",
                None,
                {"host_id": str(uuid.uuid4())},
                nested(depth),
            ),
            now=NOW,
            limits=LIMITS,
            verifier=AcceptUnsigned(),
        )
        assert isinstance(outcome, Rejected)
        assert outcome.reason in {Reason.NOT_JSON, Reason.SCHEMA_VIOLATION}
