"""The router's decisions, with no I/O: is this delivery a valid protocol-v1 report from the
host it names (`validate`: `Accepted`, or `Rejected` with a stable reason and a human detail;
cheap checks first, the body parsed only when everything else holds). Which tenant's queue then
takes it is the one rule of `services.core.routing.resolve`, which the silo's seam reads too."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from schemas.reports import REPORT_MODELS, ReportKind
from services.core import wire
from services.core.hostkeys import Keyring
from services.core.outcomes import Reason

MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class Delivery:
    """What the router looks at in an AMQP delivery (built by its consumer from aio-pika's
    message)."""

    routing_key: str
    message_id: str | None
    content_type: str | None
    type: str | None
    headers: Mapping[str, Any]
    body: bytes


@dataclass(frozen=True)
class Limits:
    """Validation's limits: size, clock skew, age."""

    max_bytes: int
    max_clock_skew: timedelta
    max_age: timedelta


@dataclass(frozen=True)
class Accepted:
    """A valid report: what routing needs of it."""

    kind: ReportKind
    host_id: uuid.UUID
    message_id: uuid.UUID
    sent_at: datetime


@dataclass(frozen=True)
class Rejected:
    """An invalid report: the reason code and what exactly was wrong."""

    reason: Reason
    detail: str


class Verifier(Protocol):
    """Proves a report came from the host it names (the signature seam)."""

    def verify(self, delivery: Delivery, host_id: uuid.UUID) -> str | None:
        """None if the report is authentic, else why not."""
        ...


class AcceptUnsigned:
    """Accepts every report: the protocol before signed reports."""

    def verify(self, delivery: Delivery, host_id: uuid.UUID) -> str | None:
        """Every report is authentic (signatures not required)."""
        return None


class SignatureVerifier:
    """Checks the `signature` header against the host key derived from the server secret."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def verify(self, delivery: Delivery, host_id: uuid.UUID) -> str | None:
        """None if the host's key signed these bytes, else what is wrong."""
        signature = delivery.headers.get(wire.SIGNATURE)  # any value at all: verify judges it
        return self._keyring.verify(signature, delivery.message_id or "", host_id, delivery.body)


def _uuid(value: str | None) -> uuid.UUID | None:
    """A UUID in ASCII text (uuid.UUID alone reads an Arabic-Indic digit as hex), else None."""
    if value is None or not value.isascii():
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _describe(errors: list[Any]) -> str:
    parts = []
    for error in errors[:MAX_ERRORS_SHOWN]:
        location = ".".join(str(p) for p in error["loc"]) or "(body)"
        parts.append(f"{location}: {error['msg']}")
    more = len(errors) - MAX_ERRORS_SHOWN
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def validate(
    delivery: Delivery, *, now: datetime, limits: Limits, verifier: Verifier
) -> Accepted | Rejected:
    """Decide whether a delivery is a valid report."""
    undecodable = delivery.headers.get(wire.UNDECODABLE)
    if undecodable is not None:  # the socket reader replaced properties nothing could decode
        return Rejected(
            Reason.UNDECODABLE,
            f"its AMQP properties could not be decoded ({wire.header_text(undecodable)}); "
            f"{delivery.headers.get(wire.RAW_PROPERTIES_BYTES)} bytes of them, the first kept "
            f"in the {wire.RAW_PROPERTIES} header",
        )
    size = len(delivery.body)
    if size > limits.max_bytes:
        return Rejected(Reason.TOO_LARGE, f"{size} bytes, over the limit of {limits.max_bytes}")
    if not delivery.routing_key.startswith(wire.REPORT_PREFIX):
        return Rejected(
            Reason.UNKNOWN_ROUTING_KEY,
            f"routing key {delivery.routing_key!r} is not report.<kind>",
        )
    named = delivery.routing_key[len(wire.REPORT_PREFIX) :]
    try:
        kind = ReportKind(named)
    except ValueError:
        return Rejected(
            Reason.UNKNOWN_KIND, f"unknown kind {named!r}; known: {', '.join(REPORT_MODELS)}"
        )
    model = REPORT_MODELS[kind]
    if delivery.type is not None and delivery.type != kind:
        return Rejected(
            Reason.KIND_MISMATCH, f"type property {delivery.type!r} but routing key says {named!r}"
        )
    if delivery.content_type is not None and delivery.content_type != wire.CONTENT_TYPE:
        return Rejected(
            Reason.BAD_CONTENT_TYPE,
            f"content_type {delivery.content_type!r}, expected {wire.CONTENT_TYPE}",
        )
    message_id = _uuid(delivery.message_id)
    if message_id is None:
        return Rejected(Reason.BAD_MESSAGE_ID, f"message_id {delivery.message_id!r} is not a UUID")
    header_host = wire.header_text(delivery.headers.get(wire.HOST_ID))
    host_id = _uuid(header_host)
    if host_id is None:
        return Rejected(Reason.BAD_HOST_ID, f"header host_id {header_host!r} is not a UUID")
    problem = verifier.verify(delivery, host_id)
    if problem is not None:
        return Rejected(Reason.BAD_SIGNATURE, problem)
    try:
        delivery.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(Reason.NOT_UTF8, f"body is not UTF-8: {exc}")
    try:
        report = model.model_validate_json(delivery.body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            return Rejected(Reason.NOT_JSON, f"body is not JSON: {_describe(errors)}")
        return Rejected(Reason.SCHEMA_VIOLATION, _describe(errors))
    if report.host_id != host_id:
        return Rejected(
            Reason.HOST_ID_MISMATCH,
            f"body host_id {report.host_id} differs from header host_id {host_id}",
        )
    if report.sent_at > now + limits.max_clock_skew:
        return Rejected(
            Reason.SENT_AT_IN_FUTURE,
            f"sent_at {report.sent_at.isoformat()} is ahead of the server clock "
            f"({now.isoformat()}) by more than {limits.max_clock_skew}",
        )
    if report.sent_at < now - limits.max_age:
        return Rejected(
            Reason.SENT_AT_TOO_OLD,
            f"sent_at {report.sent_at.isoformat()} is older than {limits.max_age}",
        )
    return Accepted(kind=kind, host_id=host_id, message_id=message_id, sent_at=report.sent_at)
