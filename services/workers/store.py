"""A batch of reports committed to one tenant database in one transaction: one statement records
the messages (its primary key drops what was already committed), the hosts' last-seen times and
the newest-report guard; then the state tables the winners change. Bulk statements (unnest,
COPY) keep a batch of heartbeats to two round trips besides begin and commit."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from services.workers.handlers import (
    Report,
    compliance_rows,
    hardware_row,
    heartbeat_row,
    package_rows,
    system_info_row,
)

# What every batch does, in one statement (one round trip): record the messages (the primary key
# drops those already committed: `fresh` is the rest), move each host's last-seen time on, and
# take the newest-report guard, which wins only if newer than what is stored, so a late, older
# report never overwrites newer state. Within the batch the newest per (host, state) is the
# candidate, the later one on equal sent_at. The parts share one snapshot and see each other only
# through `fresh`; hosts are locked in id order, as any other writer locks them.
_RECORD = """
    with batch as (
        select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                             $5::timestamptz[], $6::text[])
            with ordinality as b(message_id, host_id, kind, sent_at, received_at, state, position)
    ),
    fresh as (
        insert into agent_messages (message_id, host_id, kind, sent_at, received_at)
        select message_id, host_id, kind, sent_at, received_at from batch
        on conflict (message_id) do nothing
        returning message_id
    ),
    fresh_batch as (
        select batch.* from batch join fresh using (message_id)
    ),
    seen as (
        insert into hosts (id, last_seen_at)
        select host_id, max(sent_at) from fresh_batch group by host_id order by host_id
        on conflict (id) do update
            set last_seen_at = greatest(hosts.last_seen_at, excluded.last_seen_at),
                -- a host the sweeper marked down is up again as soon as it reports
                status = case when hosts.status = 'down' then 'up' else hosts.status end
    ),
    won as (
        insert into host_report_state (host_id, kind, sent_at, message_id)
        select distinct on (host_id, state) host_id, state, sent_at, message_id
        from fresh_batch order by host_id, state, sent_at desc, position desc
        on conflict (host_id, kind) do update
            set sent_at = excluded.sent_at, message_id = excluded.message_id
            where host_report_state.sent_at < excluded.sent_at
        returning message_id
    )
    select coalesce((select array_agg(message_id) from fresh), '{}') as fresh,
           coalesce((select array_agg(message_id) from won), '{}') as won
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

# Session settings of the connections that commit batches. The statements above are fixed bulk
# statements over arrays: their plan does not depend on the values, so planning each of the
# first five runs of each on every connection (PostgreSQL's default, before it settles on a
# generic plan) is waste that shows where a tenant's connection commits few batches (many
# tenants): with a fresh connection per 20 single-report batches, this setting saves the server a
# third of its CPU per report (`make bench-commits`).
SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


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
    [row] = await conn.fetch(
        _RECORD,
        [r.message_id for r in reports],
        [r.host_id for r in reports],
        [r.kind for r in reports],
        [r.sent_at for r in reports],
        [r.received_at for r in reports],
        [r.state_key for r in reports],
    )
    new_ids, won_ids = set(row["fresh"]), set(row["won"])
    fresh = [r for r in reports if r.message_id in new_ids]
    winners: dict[str, list[Report]] = defaultdict(list)
    for report in {r.message_id: r for r in fresh if r.message_id in won_ids}.values():
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
