"""Every report kind of the protocol is a whole kind: the places a new kind touches (listed in
docs/architecture.md, "Adding a report kind") all know it. This fails for a kind added to
`schemas` and forgotten anywhere else, which would otherwise be accepted, recorded in
agent_messages and have its state silently never written."""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.reports import KINDS, REPORT_MODELS
from services.agent.simulate import MIX as SIMULATOR_MIX
from services.agent.simulate import data_for
from services.bench import workload
from services.core.silo.models import metadata as tenant_metadata
from services.workers.handlers import Report
from services.workers.store import GROUP_WIDTHS, WRITERS
from tests.reports import BUILDERS

ROOT = Path(__file__).resolve().parents[2]
TENANT_MIGRATIONS = "".join(
    p.read_text() for p in (ROOT / "migrations/tenant/versions").glob("*.py")
)
HOST = "0b6f7c1e-8d43-4c89-9d51-3f1c2a7b9e10"


def validated(kind: str, data: object) -> dict[str, object]:
    """The data of a report of `kind`, as the router validates it (from JSON, strictly)."""
    body = json.dumps(
        {"schema": f"{kind}/v1", "host_id": HOST, "sent_at": "2026-11-28T12:00:00Z", "data": data}
    )
    result: dict[str, object] = (
        REPORT_MODELS[kind].model_validate_json(body).model_dump(mode="json")["data"]
    )
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_the_worker_has_a_writer_for_the_kind(kind: str) -> None:
    assert kind in WRITERS, f"workers/store.py WRITERS has no writer for {kind!r}"
    writer = WRITERS[kind]
    assert (writer.group is None) != (writer.replace is None), "a column group or a snapshot"


@pytest.mark.parametrize("kind", KINDS)
def test_the_writer_fills_its_columns_from_a_valid_report(kind: str) -> None:
    writer = WRITERS[kind]
    if writer.group is None or writer.columns is None:
        return  # a snapshot: tests/integration/test_store.py writes it
    data = validated(kind, BUILDERS[kind]())
    report = Report(uuid.uuid4(), uuid.uuid4(), kind, datetime.now(UTC), None, data)
    assert len(writer.columns(report)) == GROUP_WIDTHS[writer.group]


@pytest.mark.parametrize("kind", KINDS)
def test_a_migration_creates_the_writers_table(kind: str) -> None:
    table = WRITERS[kind].table
    assert table in tenant_metadata.tables, f"{table} is not a tenant table"
    assert re.search(rf"create_table\(\s*\"{table}\"", TENANT_MIGRATIONS), (
        f"no tenant migration creates {table}"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_the_simulator_and_the_bench_send_the_kind(kind: str) -> None:
    assert kind in dict(SIMULATOR_MIX), f"services/agent/simulate.py MIX lacks {kind!r}"
    assert workload.MIX is SIMULATOR_MIX  # one mix: the bench draws from the simulator's
    data = data_for(kind, random.Random(1), 1, workload.packages_snapshot())
    validated(kind, data)


@pytest.mark.parametrize("kind", KINDS)
def test_the_protocol_documents_the_kind(kind: str) -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    assert f"| `{kind}` |" in protocol, f"docs/protocol.md has no row for {kind!r}"


def test_the_writers_know_no_kind_the_protocol_does_not() -> None:
    assert set(WRITERS) == set(KINDS)
