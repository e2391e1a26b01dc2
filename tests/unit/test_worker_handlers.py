"""The workers' pure parts: reading a routed report, the state a report replaces, rows,
and the rendezvous assignment of tenants to shards."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from services.core import wire
from services.workers.assignment import Shard, owner, share
from services.workers.handlers import (
    Report,
    UnreadableReport,
    compliance_rows,
    fill_wait_s,
    package_rows,
    read_report,
)
from tests.reports import compliance, packages

T0 = datetime(2026, 11, 28, tzinfo=UTC)
HOST = uuid.uuid4()


def make(
    kind: str, minutes: int, data: dict[str, object] | None = None, host: uuid.UUID = HOST
) -> Report:
    return Report(uuid.uuid4(), host, kind, T0 + timedelta(minutes=minutes), None, data or {})


def test_read_report() -> None:
    message_id = uuid.uuid4()
    body = json.dumps(
        {
            "schema": "heartbeat/v1",
            "host_id": str(HOST),
            "sent_at": "2026-11-28T10:00:00Z",
            "data": {"status": "ok"},
        }
    ).encode()
    report = read_report(str(message_id), {wire.RECEIVED_AT: 1_795_000_000_000}, body)
    assert (report.message_id, report.host_id, report.kind) == (message_id, HOST, "heartbeat")
    assert report.sent_at == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert report.received_at is not None and report.received_at.tzinfo is not None


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'{"schema": "x/v1"}', b'{"schema": 1, "host_id": 2}']
)
def test_unreadable_reports_are_named(body: bytes) -> None:
    with pytest.raises(UnreadableReport):
        read_report(str(uuid.uuid4()), {}, body)


@pytest.mark.parametrize(
    ("kind", "data", "state"),
    [
        ("heartbeat", {}, "heartbeat"),
        ("packages", {}, "packages"),
        # two benchmarks' runs do not replace each other
        ("compliance", {"benchmark_id": "cis"}, "compliance:cis"),
        ("compliance", {"benchmark_id": "stig"}, "compliance:stig"),
    ],
)
def test_the_state_a_report_replaces(kind: str, data: dict[str, object], state: str) -> None:
    assert make(kind, 0, data).state_key == state


@pytest.mark.parametrize(
    ("buffered", "quiet_s", "wait_s"),
    [
        (1, float("inf"), 0.0),  # the tenant's first report: at once
        (1, 0.2, 0.0),  # quiet for longer than the wait: at once
        (1, 0.05, 0.0),  # quiet for exactly the wait: at once
        (1, 0.01, 0.05),  # busy: wait for the batch to fill
        (199, 0.0, 0.05),
        (200, 0.0, 0.0),  # full: at once
        (250, 0.0, 0.0),
    ],
)
def test_only_a_busy_tenants_batch_waits_to_fill(
    buffered: int, quiet_s: float, wait_s: float
) -> None:
    assert (
        fill_wait_s(buffered=buffered, batch_max=200, batch_wait_s=0.05, quiet_s=quiet_s) == wait_s
    )


def test_no_batch_waits_when_the_wait_is_zero() -> None:
    assert fill_wait_s(buffered=1, batch_max=200, batch_wait_s=0.0, quiet_s=0.0) == 0.0


def test_package_rows_store_a_repeated_entry_once() -> None:
    data = packages(count=3)
    data["packages"].append(dict(data["packages"][0]))
    rows = package_rows(make("packages", 0, data))
    assert len(rows) == 3


def test_compliance_rows_keep_one_result_per_rule() -> None:
    data = compliance(total=4)
    data["results"].append({"rule_id": "1.0.1", "status": "pass", "severity": "low"})
    rows = compliance_rows(make("compliance", 0, data))
    assert len(rows) == 4
    assert next(r for r in rows if r[2] == "1.0.1")[3] == "pass"  # the last listed result


def test_rendezvous_gives_every_tenant_exactly_one_stable_owner() -> None:
    slugs = [f"tenant-{i}" for i in range(1000)]
    # Stable across processes (no salted hash): the owner is the highest blake2b weight.
    assert Counter(owner(s, 2) for s in slugs[:10]) == Counter(
        int(hashlib.blake2b(f"{s}\x001".encode(), digest_size=8).digest().hex(), 16)
        > int(hashlib.blake2b(f"{s}\x000".encode(), digest_size=8).digest().hex(), 16)
        for s in slugs[:10]
    )
    shares = [share(slugs, Shard(i, 4)) for i in range(4)]
    assert sum(len(s) for s in shares) == len(slugs)
    assert set().union(*shares) == set(slugs)
    assert min(len(s) for s in shares) > 200  # roughly even: 250 each
    # Growing from 4 to 5 shards moves only the tenants the new shard wins.
    moved = [s for s in slugs if owner(s, 4) != owner(s, 5)]
    assert all(owner(s, 5) == 4 for s in moved)
    assert 100 < len(moved) < 300


@pytest.mark.parametrize("text", ["4/4", "-1/3", "a/b", "1", "1/0"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)
