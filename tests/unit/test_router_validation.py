"""The router's validation, table-driven: each malformed delivery gets its reason; a valid one
passes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core.outcomes import Reason
from services.router.handlers import Accepted, AcceptUnsigned, Delivery, Limits, Rejected, validate
from tests.reports import BUILDERS

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LIMITS = Limits(
    # Room for the real snapshot with its source fields (92 KB), well under the default 8 MiB.
    max_bytes=256 * 1024,
    max_clock_skew=timedelta(minutes=5),
    max_age=timedelta(days=30),
)
HOST = uuid.uuid4()


def body(kind: str = "heartbeat", **changes: Any) -> bytes:
    document = {
        "schema": f"{kind}/v1",
        "host_id": str(HOST),
        "sent_at": (NOW - timedelta(seconds=5)).isoformat(),
        "data": BUILDERS[kind](),
    }
    document.update(changes)
    return json.dumps(document).encode()


def delivery(
    raw: bytes | None = None,
    *,
    key: str = "report.heartbeat",
    message_id: str | None = "auto",
    host: str | None = str(HOST),
    type_: str | None = None,
    content_type: str | None = "application/json",
) -> Delivery:
    return Delivery(
        routing_key=key,
        message_id=str(uuid.uuid4()) if message_id == "auto" else message_id,
        content_type=content_type,
        type=type_,
        headers={} if host is None else {"host_id": host},
        body=body() if raw is None else raw,
    )


class RejectAll:
    def verify(self, delivery: Delivery, host_id: uuid.UUID) -> str | None:
        return "signature does not match"


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_every_valid_kind_is_accepted(kind: str) -> None:
    outcome = validate(
        delivery(body(kind), key=f"report.{kind}", type_=kind),
        now=NOW,
        limits=LIMITS,
        verifier=AcceptUnsigned(),
    )
    assert isinstance(outcome, Accepted)
    assert (outcome.kind, outcome.host_id) == (kind, HOST)


heartbeat = BUILDERS["heartbeat"]()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (delivery(b"x" * (LIMITS.max_bytes + 1)), Reason.TOO_LARGE),
        (delivery(key="metrics.cpu"), Reason.UNKNOWN_ROUTING_KEY),
        (delivery(key="report.telemetry"), Reason.UNKNOWN_KIND),
        (delivery(key="report."), Reason.UNKNOWN_KIND),
        (delivery(type_="packages"), Reason.KIND_MISMATCH),
        (delivery(content_type="text/plain"), Reason.BAD_CONTENT_TYPE),
        (delivery(message_id=None), Reason.BAD_MESSAGE_ID),
        (delivery(message_id="not-a-uuid"), Reason.BAD_MESSAGE_ID),
        (delivery(host=None), Reason.BAD_HOST_ID),
        (delivery(host="42"), Reason.BAD_HOST_ID),
        (delivery(host=str(uuid.uuid4())), Reason.HOST_ID_MISMATCH),
        (delivery(b"\xff\xfe"), Reason.NOT_UTF8),
        (delivery(b"{"), Reason.NOT_JSON),
        (delivery(b"[]"), Reason.SCHEMA_VIOLATION),
        (delivery(body(schema="heartbeat/v2")), Reason.SCHEMA_VIOLATION),
        (delivery(body(schema="hardware/v1")), Reason.SCHEMA_VIOLATION),
        (delivery(body(data={**heartbeat, "status": "fine"})), Reason.SCHEMA_VIOLATION),
        (delivery(body(data={**heartbeat, "uptime_s": -1})), Reason.SCHEMA_VIOLATION),
        (delivery(body(data={**heartbeat, "uptime_s": "60"})), Reason.SCHEMA_VIOLATION),
        (delivery(body(data={**heartbeat, "extra": True})), Reason.SCHEMA_VIOLATION),
        (delivery(body(data={**heartbeat, "agent_version": "a\x00b"})), Reason.SCHEMA_VIOLATION),
        (delivery(body(sent_at="2026-11-28T12:00:00")), Reason.SCHEMA_VIOLATION),
        (delivery(body(sent_at="yesterday")), Reason.SCHEMA_VIOLATION),
        (delivery(body(sent_at=(NOW + timedelta(hours=1)).isoformat())), Reason.SENT_AT_IN_FUTURE),
        (delivery(body(sent_at=(NOW - timedelta(days=31)).isoformat())), Reason.SENT_AT_TOO_OLD),
    ],
)
def test_malformed_deliveries_are_rejected_with_their_reason(
    case: Delivery, reason: Reason
) -> None:
    outcome = validate(case, now=NOW, limits=LIMITS, verifier=AcceptUnsigned())
    assert isinstance(outcome, Rejected)
    assert outcome.reason == reason, outcome.detail
    assert outcome.detail


def test_a_failed_signature_is_rejected_before_the_body_is_parsed() -> None:
    outcome = validate(delivery(b"{not even json"), now=NOW, limits=LIMITS, verifier=RejectAll())
    assert isinstance(outcome, Rejected) and outcome.reason == Reason.BAD_SIGNATURE


def test_too_large_is_decided_without_parsing() -> None:
    huge = b"[" * (LIMITS.max_bytes + 1)  # would blow any recursive parser
    outcome = validate(delivery(huge), now=NOW, limits=LIMITS, verifier=AcceptUnsigned())
    assert isinstance(outcome, Rejected) and outcome.reason == Reason.TOO_LARGE


def test_a_clock_slightly_ahead_is_tolerated() -> None:
    ahead = delivery(body(sent_at=(NOW + timedelta(minutes=4)).isoformat()))
    assert isinstance(validate(ahead, now=NOW, limits=LIMITS, verifier=AcceptUnsigned()), Accepted)


def test_header_bytes_are_read_as_text() -> None:
    case = Delivery(
        "report.heartbeat", str(uuid.uuid4()), None, None, {"host_id": str(HOST).encode()}, body()
    )
    assert isinstance(validate(case, now=NOW, limits=LIMITS, verifier=AcceptUnsigned()), Accepted)
