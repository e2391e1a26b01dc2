"""A batch of reports committed to one tenant database in one transaction: agent_messages first
(its primary key drops what was already committed), then the newest-report guard, then the
state tables. Bulk statements (unnest, COPY) keep it to a handful of round trips per batch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from services.workers.handlers import (
    Report,
    compliance_rows,
    hardware_row,
    heartbeat_row,
    last_seen,
    newest_per_state,
    package_rows,
    system_info_row,
)

_NEW_MESSAGES = """
    insert into agent_messages (message_id, host_id, kind, sent_at, received_at)
    select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[])
    on conflict (message_id) do nothing
    returning message_id
"""
_SEEN_HOSTS = """
    insert into hosts (id, last_seen_at)
    select * from unnest($1::uuid[], $2::timestamptz[])
    on conflict (id) do update
        set last_seen_at = greatest(hosts.last_seen_at, excluded.last_seen_at),
            -- a host the sweeper marked down is up again as soon as it reports
            status = case when hosts.status = 'down' then 'up' else hosts.status end
"""
# Wins only if newer than what is stored: a late, older report never overwrites newer state.
_NEWEST_GUARD = """
    insert into host_report_state (host_id, kind, sent_at, message_id)
    select * from unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::uuid[])
    on conflict (host_id, kind) do update
        set sent_at = excluded.sent_at, message_id = excluded.message_id
        where host_report_state.sent_at < excluded.sent_at
    returning message_id
"""
_HEARTBEATS = """
    update hosts set status = v.status, agent_version = v.agent_version, uptime_s = v.uptime_s,
        load_1 = v.load_1, load_5 = v.load_5, load_15 = v.load_15
    from unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::float8[], $6::float8[],
                $7::float8[]) as v(id, status, agent_version, uptime_s, load_1, load_5, load_15)
    where hosts.id = v.id
"""
_SYSTEM_INFO = """
    update hosts set hostname = v.hostname, fqdn = v.fqdn, os_name = v.os_name,
        os_version = v.os_version, kernel = v.kernel, arch = v.arch,
        ipv4 = string_to_array(v.ipv4, ' '), ipv6 = string_to_array(v.ipv6, ' ')
    from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[])
        as v(id, hostname, fqdn, os_name, os_version, kernel, arch, ipv4, ipv6)
    where hosts.id = v.id
"""
_HARDWARE = """
    insert into host_hardware (host_id, cpu_vendor, cpu_model, cpu_cores, cpu_threads, cpu_mhz,
                               memory_mb, disks, nics, sent_at)
    select * from unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::float8[],
                         $7::bigint[], $8::jsonb[], $9::jsonb[], $10::timestamptz[])
    on conflict (host_id) do update set cpu_vendor = excluded.cpu_vendor,
        cpu_model = excluded.cpu_model, cpu_cores = excluded.cpu_cores,
        cpu_threads = excluded.cpu_threads, cpu_mhz = excluded.cpu_mhz,
        memory_mb = excluded.memory_mb, disks = excluded.disks, nics = excluded.nics,
        sent_at = excluded.sent_at
"""
_PACKAGE_COLUMNS = ("host_id", "manager", "name", "arch", "version", "sent_at")
_COMPLIANCE_COLUMNS = ("host_id", "benchmark_id", "rule_id", "status", "severity", "sent_at")


@dataclass(frozen=True)
class Committed:
    fresh: list[Report]  # committed now (not seen before)
    duplicates: int
    applied: int

    @property
    def new(self) -> int:
        return len(self.fresh)


def _columns(rows: list[tuple[object, ...]]) -> list[list[object]]:
    """Rows as one array per column, for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)]


async def commit_batch(conn: asyncpg.Connection, reports: list[Report]) -> Committed:
    """Commit the reports (the caller holds the transaction)."""
    if not reports:
        return Committed([], 0, 0)
    new_ids = {
        row["message_id"]
        for row in await conn.fetch(
            _NEW_MESSAGES,
            [r.message_id for r in reports],
            [r.host_id for r in reports],
            [r.kind for r in reports],
            [r.sent_at for r in reports],
            [r.received_at for r in reports],
        )
    }
    fresh = [r for r in reports if r.message_id in new_ids]
    if not fresh:
        return Committed([], len(reports), 0)

    seen = sorted(last_seen(fresh).items())  # in id order: concurrent writers lock alike
    await conn.execute(_SEEN_HOSTS, [h for h, _ in seen], [t for _, t in seen])

    candidates = newest_per_state(fresh)
    won_ids = {
        row["message_id"]
        for row in await conn.fetch(
            _NEWEST_GUARD,
            [r.host_id for r in candidates],
            [r.state_key for r in candidates],
            [r.sent_at for r in candidates],
            [r.message_id for r in candidates],
        )
    }
    winners: dict[str, list[Report]] = defaultdict(list)
    for report in candidates:
        if report.message_id in won_ids:
            winners[report.kind].append(report)
    await _apply(conn, winners)
    return Committed(fresh, len(reports) - len(fresh), len(won_ids))


async def _apply(conn: asyncpg.Connection, winners: dict[str, list[Report]]) -> None:
    if rows := [heartbeat_row(r) for r in winners["heartbeat"]]:
        await conn.execute(_HEARTBEATS, *_columns(rows))
    if rows := [system_info_row(r) for r in winners["system_info"]]:
        # unnest cannot take an array of arrays of different lengths: addresses travel as one
        # space-separated text each (an address never contains a space) and are split in SQL.
        flat = [(*row[:7], " ".join(row[7]), " ".join(row[8])) for row in rows]
        await conn.execute(_SYSTEM_INFO, *_columns(flat))
    if rows := [hardware_row(r) for r in winners["hardware"]]:
        await conn.execute(_HARDWARE, *_columns(rows))
    if snapshots := winners["packages"]:
        hosts = [r.host_id for r in snapshots]
        await conn.execute("delete from host_packages where host_id = any($1::uuid[])", hosts)
        records = [row for r in snapshots for row in package_rows(r)]
        if records:
            await conn.copy_records_to_table(
                "host_packages", records=records, columns=_PACKAGE_COLUMNS
            )
    if runs := winners["compliance"]:
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
