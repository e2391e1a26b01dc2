"""The workers' decisions, with no I/O: read a routed report, name the state it replaces, and
turn reports into table rows (which report wins is decided by the commit's statement, in
`store`, which builds its statements from the row types here). The router validated every
body, so reading it again here is plain JSON, not a second validation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schemas.reports import ReportKind
from services.core import wire
from services.core.errors import UnreadableReport


@dataclass(frozen=True)
class Report:
    """A report as a worker reads it from its tenant's queue."""

    message_id: uuid.UUID
    host_id: uuid.UUID
    kind: str
    sent_at: datetime
    received_at: datetime | None
    data: Mapping[str, Any]

    @property
    def state_key(self) -> str:
        """What a newer report of the same host replaces: per kind, and per benchmark for
        compliance (two benchmarks' runs do not replace each other)."""
        if self.kind == ReportKind.COMPLIANCE:
            return f"compliance:{self.data['benchmark_id']}"
        return self.kind


def read_report(message_id: str | None, headers: Mapping[str, Any], body: bytes) -> Report:
    """The report in a routed message, or `UnreadableReport` saying why not."""
    try:
        document = json.loads(body)
        received_ms = headers.get(wire.RECEIVED_AT)
        kind = str(document["schema"]).split("/", 1)[0]
        return Report(
            message_id=uuid.UUID(message_id or ""),
            host_id=uuid.UUID(document["host_id"]),
            kind=kind,
            sent_at=datetime.fromisoformat(document["sent_at"]),
            received_at=None
            if received_ms is None
            else datetime.fromtimestamp(int(received_ms) / 1000, UTC),
            data=document["data"],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableReport(f"unreadable report: {type(exc).__name__}: {exc}") from None


def fill_wait_s(*, buffered: int, batch_max: int, batch_wait_s: float, quiet_s: float) -> float:
    """How long a tenant's batch waits to fill before it is committed. A busy tenant (its last
    batch settled under batch_wait_s ago) waits batch_wait_s, so its reports go together in fewer
    transactions; a report at a quiet moment goes at once, and so does a full batch. (Nagle's
    rule, for commits: the wait is paid only where there is something to gather.)"""
    if buffered >= batch_max or quiet_s >= batch_wait_s:
        return 0.0
    return batch_wait_s


# -- rows per kind -------------------------------------------------------------------------------
# One named row type per table a report writes; the store's statements and COPY columns are
# built from their fields, never from positions.


class HeartbeatRow(NamedTuple):
    """A heartbeat's part of its host's row."""

    host_id: uuid.UUID
    status: str
    agent_version: str
    uptime_s: int
    load_1: float
    load_5: float
    load_15: float


class SystemInfoRow(NamedTuple):
    """A system_info's part of its host's row."""

    host_id: uuid.UUID
    hostname: str
    fqdn: str
    os_name: str
    os_version: str
    kernel: str
    arch: str
    ipv4: list[str]
    ipv6: list[str]


class HardwareRow(NamedTuple):
    """A host's `host_hardware` row."""

    host_id: uuid.UUID
    cpu_vendor: str
    cpu_model: str
    cpu_cores: int
    cpu_threads: int
    cpu_mhz: float
    memory_mb: int
    disks: str  # JSON
    nics: str  # JSON
    sent_at: datetime


class PackageRow(NamedTuple):
    """A `host_packages` row."""

    host_id: uuid.UUID
    manager: str
    name: str
    arch: str
    version: str
    sent_at: datetime
    source: str | None  # only where it differs from the binary's name
    source_version: str | None  # only where it differs from the binary's version


class ComplianceRow(NamedTuple):
    """A `compliance_results` row."""

    host_id: uuid.UUID
    benchmark_id: str
    rule_id: str
    status: str
    severity: str
    sent_at: datetime


def heartbeat_row(r: Report) -> HeartbeatRow:
    """A heartbeat's host row: status, agent version, uptime, load."""
    d = r.data
    return HeartbeatRow(
        r.host_id,
        d["status"],
        d["agent_version"],
        d["uptime_s"],
        float(d["load_1"]),
        float(d["load_5"]),
        float(d["load_15"]),
    )


def system_info_row(r: Report) -> SystemInfoRow:
    """A system_info's host row: names, OS, kernel, architecture, addresses."""
    d = r.data
    return SystemInfoRow(
        r.host_id,
        d["hostname"],
        d["fqdn"],
        d["os_name"],
        d["os_version"],
        d["kernel"],
        d["arch"],
        list(d["ipv4"]),
        list(d["ipv6"]),
    )


def hardware_row(r: Report) -> HardwareRow:
    """A hardware report's row: CPU, memory, disks and NICs."""
    d = r.data
    cpu = d["cpu"]
    return HardwareRow(
        r.host_id,
        cpu["vendor"],
        cpu["model"],
        cpu["cores"],
        cpu["threads"],
        float(cpu["mhz"]),
        d["memory_mb"],
        json.dumps(d["disks"]),
        json.dumps(d["nics"]),
        r.sent_at,
    )


def package_rows(r: Report) -> list[PackageRow]:
    """One row per distinct (name, arch, version): a snapshot listing one twice stores it once
    (the last entry's source wins). Its source and source version are kept only where they differ
    from the binary's own (absent means the same, as the protocol says)."""
    manager = r.data["manager"]
    unique: dict[tuple[str, str, str], tuple[str | None, str | None]] = {}
    for p in r.data["packages"]:
        source = p.get("source")
        source_version = p.get("source_version")
        unique[(p["name"], p["arch"], p["version"])] = (
            source if source not in (None, p["name"]) else None,
            source_version if source_version not in (None, p["version"]) else None,
        )
    return [
        PackageRow(
            r.host_id, manager, name, arch, version, r.sent_at, *unique[(name, arch, version)]
        )
        for name, arch, version in sorted(unique)
    ]


def compliance_rows(r: Report) -> list[ComplianceRow]:
    """One row per rule (the last result for a rule listed twice)."""
    benchmark = r.data["benchmark_id"]
    by_rule = {res["rule_id"]: res for res in r.data["results"]}
    return [
        ComplianceRow(r.host_id, benchmark, rule, res["status"], res["severity"], r.sent_at)
        for rule, res in sorted(by_rule.items())
    ]
