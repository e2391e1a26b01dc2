"""Dead letters as data: copies of one letter are one letter to operators, and each letter goes
back where it can succeed (never through the default exchange)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.core import wire
from services.core.dead_letters import DeadLetter, Filters, copies_of, destination, read_letter
from services.core.names import Names

NAMES = Names("blue")


def letter(queue: str, message_id: str | None, body: bytes = b"{}", **headers: Any) -> DeadLetter:
    return read_letter(queue, message_id, headers.pop("kind", None), headers, body)


def test_copies_of_one_letter_are_one_with_their_count_in_first_seen_order() -> None:
    deliveries = [
        ("d1", letter("unrouted", "a")),
        ("d2", letter("unrouted", "b")),
        ("d3", letter("unrouted", "a")),
        ("d4", letter("unrouted", None)),  # no message_id: never a copy of anything
        ("d5", letter("unrouted", None)),
        ("d6", letter("invalid", "a")),  # another queue: another letter
        ("d7", letter("unrouted", "a")),
    ]
    grouped = copies_of(deliveries)
    assert [(held, x.message_id, x.copies) for held, x in grouped] == [
        (["d1", "d3", "d7"], "a", 3),
        (["d2"], "b", 1),
        (["d4"], None, 1),
        (["d5"], None, 1),
        (["d6"], "a", 1),
    ]


def test_letters_sharing_a_message_id_are_copies_only_when_reason_and_body_match_too() -> None:
    # A forgery carrying a host's message_id, and the host's own later letter with that id.
    forged = letter("invalid", "m", b'{"forged": true}', **{wire.REASON: "bad-signature"})
    own = letter("invalid", "m", b'{"own": true}', **{wire.REASON: "sent-at-too-old"})
    same_body_other_reason = letter("invalid", "m", b'{"own": true}', **{wire.REASON: "not-json"})
    grouped = copies_of(
        [("f1", forged), ("o1", own), ("o2", own), ("x1", same_body_other_reason), ("f2", forged)]
    )
    assert [(held, x.reason, x.copies) for held, x in grouped] == [
        (["f1", "f2"], "bad-signature", 2),
        (["o1", "o2"], "sent-at-too-old", 2),
        (["x1"], "not-json", 1),
    ]


def test_an_undecodable_letter_says_so_with_its_size_and_goes_nowhere_on_replay() -> None:
    headers = {
        wire.UNDECODABLE: "property timestamp: ValueError: year 584556019 is out of range",
        wire.RAW_PROPERTIES: bytearray(b"\x00\x40" + b"\xff" * 8),
        wire.RAW_PROPERTIES_BYTES: 10,
        wire.FIRST_DEATH_REASON: "delivery_limit",
    }
    found = letter("failed", None, b"body", **headers)
    assert found.reason == "undecodable"
    assert found.size_bytes == 4 + 10
    assert found.label == f"sha256:{found.digest[:12]}"
    shown = found.as_json(with_body=True)
    assert shown["undecodable"] == headers[wire.UNDECODABLE]
    assert str(shown["headers"][wire.RAW_PROPERTIES]).startswith("base64:")  # type: ignore[index]


@pytest.mark.parametrize(
    ("queue", "headers", "kind", "expected"),
    [
        # A failed commit goes straight back to its tenant, through the tenants' exchange.
        ("failed", {wire.TENANT: "acme"}, "heartbeat", ("blue.tenants", "acme")),
        # One whose tenant is unknown is validated and routed again.
        ("failed", {}, "heartbeat", ("blue.agents", "report.heartbeat")),
        # An invalid report keeps the routing key it was published with.
        (
            "invalid",
            {wire.ROUTING_KEY: "report.hardware"},
            None,
            ("blue.agents", "report.hardware"),
        ),
        ("invalid", {wire.ROUTING_KEY: "metrics.cpu"}, None, ("blue.agents", "metrics.cpu")),
        # An unrouted one died under the queue's own key: its kind gives the agent's back.
        (
            "unrouted",
            {wire.ROUTING_KEY: "blue.intake"},
            "heartbeat",
            ("blue.agents", "report.heartbeat"),
        ),
    ],
)
def test_where_a_letter_goes_back(
    queue: str, headers: dict[str, str], kind: str | None, expected: tuple[str, str]
) -> None:
    found = read_letter(queue, "m", kind, headers, b"{}")
    exchange, key = destination(found, NAMES)
    assert (exchange, key) == expected
    assert exchange, "never the default exchange: it reaches every queue of the vhost"


@pytest.mark.parametrize(
    ("within", "letters", "expected"),
    [
        # An API caller's letters: those carrying one of their tenants, and no tenantless one.
        (frozenset({"acme"}), None, ["a1", "a2"]),
        (frozenset({"globex"}), None, ["g1"]),
        (frozenset(), None, []),
        # Named letters, within the caller's tenants only.
        (frozenset({"acme"}), frozenset({"a2", "g1"}), ["a2"]),
        # An admin's: every letter, tenantless ones included; named ones by label.
        (None, None, ["a1", "a2", "g1", "n1", "sha256:"]),
        (None, frozenset({"n1"}), ["n1"]),
    ],
)
def test_filters_keep_a_callers_letters_to_their_tenants(
    within: frozenset[str] | None, letters: frozenset[str] | None, expected: list[str]
) -> None:
    now = datetime.now(UTC)
    found = [
        letter("failed", "a1", **{wire.TENANT: "acme"}),
        letter("failed", "a2", **{wire.TENANT: "acme"}),
        letter("failed", "g1", **{wire.TENANT: "globex"}),
        letter("unrouted", "n1"),
        letter("invalid", None, b"no id"),
    ]
    kept = [x for x in found if Filters(within=within, letters=letters).matches(x, now)]
    assert [x.label[:7] if x.message_id is None else x.label for x in kept] == expected
