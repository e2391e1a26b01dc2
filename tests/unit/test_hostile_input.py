"""Hostile input, property-based: whatever arrives, ingest's decision is an answer (accepted, or
rejected with a reason and a detail), never an exception; oversized bodies are refused before
anything parses them; and an accepted report means exactly what it says."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.reports import REPORT_MODELS
from services.core.outcomes import Reason
from services.ingest import handlers
from services.ingest.handlers import Accepted, AcceptUnsigned, Delivery, Limits, Rejected, validate
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
    | st.uuids().map(str)
)


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
    outcome = validate(delivery, now=NOW, limits=LIMITS, verifier=AcceptUnsigned())
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
