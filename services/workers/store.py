"""A batch of reports committed to one tenant database: one statement records the messages (its
primary key drops what was already committed), the hosts' last-seen times, the newest-report
guard and the state of every kind that is a row per host (heartbeat, system_info, hardware). A
batch of only those kinds (most batches) is that one statement, atomic on its own: one round trip,
no BEGIN or COMMIT. Snapshots (packages, compliance) replace a host's rows, with COPY, in a
transaction around the same statement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from schemas.reports import ReportKind
from services.core.catalog import findings
from services.core.catalog.matcher import CatalogIndex, installed_of
from services.core.domain import HostStatus
from services.core.silo import models as silo
from services.workers.handlers import (
    ComplianceRow,
    HardwareRow,
    HeartbeatRow,
    Report,
    SystemInfoRow,
    compliance_rows,
    hardware_row,
    heartbeat_row,
    package_rows,
    system_info_row,
)


# The statement's column groups after the ledger's six (heartbeat, system_info, hardware): each
# kind's row but its host (and hardware's sent_at, which the ledger's column carries). A report
# fills its kind's group; the others travel as nulls.
def _state_fields(fields: tuple[str, ...], *but: str) -> tuple[str, ...]:
    return tuple(f for f in fields if f not in ("host_id", *but))


_HEARTBEAT_STATE = _state_fields(HeartbeatRow._fields)
_SYSTEM_INFO_STATE = _state_fields(SystemInfoRow._fields)
_HARDWARE_STATE = _state_fields(HardwareRow._fields, "sent_at")
GROUP_WIDTHS = (len(_HEARTBEAT_STATE), len(_SYSTEM_INFO_STATE), len(_HARDWARE_STATE))
_heartbeat_state = attrgetter(*_HEARTBEAT_STATE)
_hardware_state = attrgetter(*_HARDWARE_STATE)
# unnest cannot take an array of arrays of different lengths: a host's addresses travel as one
# space-separated text each (an address never contains a space), split in SQL.
_SPACE_JOINED = ("ipv4", "ipv6")

_LEDGER = (
    ("message_id", "uuid"),
    ("host_id", "uuid"),
    ("kind", "text"),
    ("sent_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("state", "text"),
)


# SQLAlchemy's dialect classes carry no annotations.
_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _sql_type(table: Table, column: str) -> str:
    """A state column's type as the statement's argument carries it: its table's."""
    if column in _SPACE_JOINED:
        return "text"
    return str(table.c[column].type.compile(dialect=_POSTGRESQL)).lower()


_ARGUMENTS = (
    *_LEDGER,
    *((c, _sql_type(silo.hosts, c)) for c in _HEARTBEAT_STATE + _SYSTEM_INFO_STATE),
    *((c, _sql_type(silo.host_hardware, c)) for c in _HARDWARE_STATE),
)


def _taken_if(reported: str, columns: tuple[str, ...]) -> str:
    """Each column's new value if this batch has the kind's newest report for the host (its
    `reported` column is never null in such a report), the stored one otherwise."""
    return ",\n                ".join(
        f"{c} = case when excluded.{reported} is not null then excluded.{c} else hosts.{c} end"
        for c in columns
    )


def _selected(prefix: str, columns: tuple[str, ...]) -> str:
    return ", ".join(
        f"string_to_array({prefix}.{c}, ' ')" if c in _SPACE_JOINED else f"{prefix}.{c}"
        for c in columns
    )


_HOST_COLUMNS = _HEARTBEAT_STATE + _SYSTEM_INFO_STATE
_HEARTBEAT_SELECTED = _selected("hb", _HEARTBEAT_STATE).replace(
    "hb.status", f"coalesce(hb.status, '{HostStatus.UNKNOWN}')"
)

# What every batch does, in one statement: record the messages (the primary key drops those
# already committed: `fresh` is the rest), take the newest-report guard (it wins only if newer
# than what is stored, so a late, older report never overwrites newer state; within the batch the
# newest per (host, state) is the candidate, the later one on equal sent_at), move each host's
# last-seen time on and write the winners' state: heartbeat and system_info into the host's row,
# hardware into its own. The parts share one snapshot and see each other only through the rows
# they return; each row is written once (a second write of a row in one statement would be
# lost), hosts in id order, as any other writer locks them. Its columns are the rows' fields
# (`HeartbeatRow`, ...) and their types the silo tables'.
_RECORD = f"""
    with batch as (
        select * from unnest(
            {", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_ARGUMENTS, start=1))}
        ) with ordinality as b({", ".join(name for name, _ in _ARGUMENTS)}, position)
    ),
    fresh as (
        insert into agent_messages (message_id, host_id, kind, sent_at, received_at)
        select message_id, host_id, kind, sent_at, received_at from batch
        on conflict (message_id) do nothing
        returning message_id
    ),
    fresh_batch as (  -- a message twice in one batch (a redelivery) counts once
        select distinct on (message_id) batch.* from batch join fresh using (message_id)
        order by message_id, position
    ),
    won as (
        insert into host_report_state (host_id, kind, sent_at, message_id)
        select distinct on (host_id, state) host_id, state, sent_at, message_id
        from fresh_batch order by host_id, state, sent_at desc, position desc
        on conflict (host_id, kind) do update
            set sent_at = excluded.sent_at, message_id = excluded.message_id
            where host_report_state.sent_at < excluded.sent_at
        returning message_id
    ),
    winners as (
        select fresh_batch.* from fresh_batch join won using (message_id)
    ),
    seen as (
        insert into hosts (id, last_seen_at, {", ".join(_HOST_COLUMNS)})
        select h.host_id, h.last_seen_at, {_HEARTBEAT_SELECTED},
               {_selected("si", _SYSTEM_INFO_STATE)}
        from (select host_id, max(sent_at) as last_seen_at from fresh_batch group by host_id) h
        left join winners hb on hb.host_id = h.host_id and hb.kind = '{ReportKind.HEARTBEAT}'
        left join winners si on si.host_id = h.host_id and si.kind = '{ReportKind.SYSTEM_INFO}'
        order by h.host_id
        on conflict (id) do update
            -- A heartbeat always carries uptime_s and a system_info always os_name: each says
            -- whether this batch has that kind's newest report for the host.
            set last_seen_at = greatest(hosts.last_seen_at, excluded.last_seen_at),
                status = case when excluded.uptime_s is not null then excluded.status
                              -- a host the sweeper marked down is up again when it reports
                              when hosts.status = '{HostStatus.DOWN}' then '{HostStatus.UP}'
                              else hosts.status end,
                {_taken_if("uptime_s", tuple(c for c in _HEARTBEAT_STATE if c != "status"))},
                {_taken_if("os_name", _SYSTEM_INFO_STATE)}
    ),
    hardware as (
        insert into host_hardware (host_id, {", ".join(_HARDWARE_STATE)}, sent_at)
        select host_id, {", ".join(_HARDWARE_STATE)}, sent_at
        from winners where kind = '{ReportKind.HARDWARE}' order by host_id
        on conflict (host_id) do update
            set {", ".join(f"{c} = excluded.{c}" for c in (*_HARDWARE_STATE, "sent_at"))}
    )
    select coalesce((select array_agg(message_id) from fresh), '{{}}') as fresh,
           coalesce((select array_agg(message_id) from won), '{{}}') as won
"""

_COMPLIANCE_COLUMNS = ComplianceRow._fields

# Session settings of the connections that commit batches. The statements above are fixed bulk
# statements over arrays: their plan does not depend on the values, so planning each of the
# first five runs of each on every connection (PostgreSQL's default, before it settles on a
# generic plan) is waste that shows where a tenant's connection commits few batches (many
# tenants): with a fresh connection per 20 single-report batches, this setting saves the server a
# third of its CPU per report (`make bench-commits`).
SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


@dataclass(frozen=True)
class Committed:
    """What a batch commit did: the reports committed now, duplicates dropped, state applied."""

    fresh: list[Report]  # committed now (not seen before)
    duplicates: int
    applied: int

    @property
    def new(self) -> int:
        """Reports committed now."""
        return len(self.fresh)


def _system_info_columns(r: Report) -> tuple[Any, ...]:
    row = system_info_row(r)
    return tuple(
        " ".join(getattr(row, f)) if f in _SPACE_JOINED else getattr(row, f)
        for f in _SYSTEM_INFO_STATE
    )


def _state_columns(r: Report) -> tuple[Any, ...]:
    """The report's state for the statement: its kind's column group, nulls for the others."""
    writer = WRITERS[r.kind]
    groups: list[tuple[Any, ...]] = [(None,) * width for width in GROUP_WIDTHS]
    if writer.group is not None and writer.columns is not None:
        groups[writer.group] = writer.columns(r)
    return tuple(value for group in groups for value in group)


def _record_arguments(reports: Sequence[Report]) -> list[list[Any]]:
    """The statement's arguments: one array per column, a report per position."""
    rows = [
        (r.message_id, r.host_id, r.kind, r.sent_at, r.received_at, r.state_key, *_state_columns(r))
        for r in reports
    ]
    return [list(column) for column in zip(*rows, strict=True)]


# Kinds whose winning report re-evaluates its host's findings: a packages snapshot always, a
# system_info when it changes the host's release.
EVALUATED = frozenset({ReportKind.PACKAGES, ReportKind.SYSTEM_INFO})


def _needs_transaction(reports: list[Report], catalog: CatalogIndex | None) -> bool:
    return any(
        WRITERS[r.kind].replace is not None or (catalog is not None and r.kind in EVALUATED)
        for r in reports
    )


async def commit_batch(
    conn: asyncpg.Connection, reports: list[Report], catalog: CatalogIndex | None = None
) -> Committed:
    """Commit the reports, atomically: one statement when every report's kind is written by it
    (no transaction of its own needed), else in a transaction (the caller's, if it holds one).
    With a catalog, the findings of every host whose packages or release this batch changes
    are written in the same transaction."""
    if not reports:
        return Committed([], 0, 0)
    if conn.is_in_transaction() or not _needs_transaction(reports, catalog):
        return await _commit(conn, reports, catalog)
    async with conn.transaction():
        return await _commit(conn, reports, catalog)


async def _commit(
    conn: asyncpg.Connection, reports: list[Report], catalog: CatalogIndex | None
) -> Committed:
    [row] = await conn.fetch(_RECORD, *_record_arguments(reports))
    new_ids, won_ids = set(row["fresh"]), set(row["won"])
    fresh: list[Report] = []  # the first of each message committed now, in batch order
    for report in reports:
        if report.message_id in new_ids:
            new_ids.discard(report.message_id)  # one delivered twice in a batch counts once
            fresh.append(report)
    winners = [r for r in fresh if r.message_id in won_ids]
    for kind, writer in WRITERS.items():  # snapshots: each winning one replaces its host's rows
        if writer.replace is not None and (runs := [r for r in winners if r.kind == kind]):
            await writer.replace(conn, runs)
    if catalog is not None:
        for r in winners:
            if r.kind == ReportKind.PACKAGES:
                installed = installed_of(r.data["packages"])
                await findings.evaluate(
                    conn,
                    catalog,
                    r.host_id,
                    r.sent_at,
                    installed=installed,
                    revision_left_to_sweeper=True,
                )
        for r in winners:
            if r.kind == ReportKind.SYSTEM_INFO:
                await findings.evaluate(
                    conn, catalog, r.host_id, r.sent_at, only_if_release_changed=True
                )
    return Committed(fresh, len(reports) - len(fresh), len(won_ids))


async def _replace_compliance(conn: asyncpg.Connection, runs: list[Report]) -> None:
    """A winning compliance run replaces its host's results of its benchmark."""
    await conn.execute(
        "delete from compliance_results r using unnest($1::uuid[], $2::text[]) as v(h, b) "
        "where r.host_id = v.h and r.benchmark_id = v.b",
        [r.host_id for r in runs],
        [str(r.data["benchmark_id"]) for r in runs],
    )
    records = [row for r in runs for row in compliance_rows(r)]
    if records:
        await conn.copy_records_to_table(
            "compliance_results", records=records, columns=_COMPLIANCE_COLUMNS
        )


# A host's package list changes little from one snapshot to the next: write only the change.
# What the snapshot no longer lists goes, what it lists anew comes (keys deleted and keys
# inserted are disjoint, so one statement holds both); a package listed before stays as it is,
# with the sent_at of the snapshot that first listed it in this version. (Replacing all of it
# rewrote every row and both its indexes on every snapshot: two thousand rows out and in again
# for a typical server, most of the database's work per report.)
_PACKAGES = """
    with listed as (
        select $1::uuid as host_id, $2::text as manager, n.name, n.arch, n.version,
               $3::timestamptz as sent_at, n.source, n.source_version
        from unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
             as n(name, arch, version, source, source_version)
    ),
    gone as (
        delete from host_packages p
        where p.host_id = $1
          and not exists (select 1 from listed n where n.name = p.name and n.arch = p.arch
                                                   and n.version = p.version)
    ),
    kept as (  -- rows kept whose manager (a reinstall) or source (an agent that sends it now)
               -- is not as listed: updated here, so the insert below touches only new rows
        update host_packages p
        set manager = $2, source = n.source, source_version = n.source_version
        from listed n
        where p.host_id = $1 and n.name = p.name and n.arch = p.arch and n.version = p.version
          and (p.manager <> $2 or (p.source, p.source_version)
                                  is distinct from (n.source, n.source_version))
    )
    insert into host_packages (host_id, manager, name, arch, version, sent_at, source,
                               source_version)
    select * from listed order by name, arch, version
    on conflict (host_id, name, arch, version) do nothing
"""


async def _replace_packages(conn: asyncpg.Connection, snapshots: list[Report]) -> None:
    """One statement per snapshot (at most one per host in a batch): the host, its manager and
    sent_at once, and the listed packages as three arrays."""
    for snapshot in snapshots:
        rows = package_rows(snapshot)
        await conn.execute(
            _PACKAGES,
            snapshot.host_id,
            str(snapshot.data["manager"]),
            snapshot.sent_at,
            [row.name for row in rows],
            [row.arch for row in rows],
            [row.version for row in rows],
            [row.source for row in rows],
            [row.source_version for row in rows],
        )


@dataclass(frozen=True)
class Writer:
    """Where one kind's state goes: its table, and how it is written. Either a column group of
    the record statement (a row per host, in one statement with the ledger), or a snapshot that
    replaces its host's rows after it, in the same transaction."""

    table: str
    group: int | None = None  # the statement's column group it fills (see GROUP_WIDTHS)
    columns: Callable[[Report], tuple[Any, ...]] | None = None
    replace: Callable[[asyncpg.Connection, list[Report]], Awaitable[None]] | None = None


# Every kind the protocol has, and its writer. A kind with no writer here is not committed at
# all: its report is dead-lettered (commit-rejected), never recorded without its state; and
# tests/unit/test_kinds.py fails for a kind of `schemas` missing here, in the migrations, in the
# simulator or in docs/protocol.md.
WRITERS: dict[str, Writer] = {
    ReportKind.HEARTBEAT: Writer(
        "hosts", group=0, columns=lambda r: _heartbeat_state(heartbeat_row(r))
    ),
    ReportKind.SYSTEM_INFO: Writer("hosts", group=1, columns=_system_info_columns),
    ReportKind.HARDWARE: Writer(
        "host_hardware", group=2, columns=lambda r: _hardware_state(hardware_row(r))
    ),
    ReportKind.PACKAGES: Writer("host_packages", replace=_replace_packages),
    ReportKind.COMPLIANCE: Writer("compliance_results", replace=_replace_compliance),
}
