"""The workers' commit alone, on a scratch tenant database (`python -m services.bench.commits`,
or `make bench-commits`): client and server CPU per report for heartbeat batches of a few sizes,
each on one long-lived connection, and the many-tenants pattern (a fresh connection for every 20
single-report batches), with and without the commit connections' session settings, as medians of
interleaved rounds. Prints the figures; removes its database."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.bench import scratch
from services.bench.procstat import CLOCK_TICKS
from services.workers import store
from services.workers.handlers import Report

HOSTS = 50


@dataclass(frozen=True)
class Pattern:
    """A shape of commit traffic: connections, batches on each, reports per batch."""

    name: str
    connections: int
    batches_per_connection: int
    batch_size: int


PATTERNS = (
    Pattern("thin: a fresh connection per 20 batches of 1", 100, 20, 1),
    Pattern("batches of 1", 1, 1000, 1),
    Pattern("batches of 20", 1, 200, 20),
    Pattern("batches of 200", 1, 40, 200),
)


def _backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Heartbeats:
    """Heartbeat reports from a fixed set of hosts, each newer than the last."""

    def __init__(self) -> None:
        self._hosts = [uuid.uuid4() for _ in range(HOSTS)]
        self._start = datetime.now(UTC)
        self._sent = 0

    def batch(self, size: int) -> list[Report]:
        """The next `size` heartbeats, each newer than the last."""
        reports = []
        for _ in range(size):
            self._sent += 1
            data = {
                "status": "up",
                "agent_version": "1.0",
                "uptime_s": self._sent,
                "load_1": 0.1,
                "load_5": 0.2,
                "load_15": 0.3,
            }
            sent_at = self._start + timedelta(milliseconds=self._sent)
            host = self._hosts[self._sent % HOSTS]
            reports.append(Report(uuid.uuid4(), host, "heartbeat", sent_at, None, data))
        return reports


async def measure(dsn: str, pattern: Pattern, settings: Mapping[str, str]) -> dict[str, float]:
    """CPU (this process, and the server backends it used) per report over the pattern."""
    reports = Heartbeats()
    server_s, count = 0.0, 0
    client_started, wall_started = time.process_time(), time.perf_counter()
    for _ in range(pattern.connections):
        conn = await asyncpg.connect(dsn, server_settings=dict(settings))
        try:
            pid = await conn.fetchval("select pg_backend_pid()")
            for _ in range(pattern.batches_per_connection):
                await store.commit_batch(conn, reports.batch(pattern.batch_size))
                count += pattern.batch_size
            server_s += _backend_cpu_s(pid)
        finally:
            await conn.close()
    return {
        "client_ms": 1000 * (time.process_time() - client_started) / count,
        "server_ms": 1000 * server_s / count,
        "wall_ms": 1000 * (time.perf_counter() - wall_started) / count,
    }


async def run(admin_dsn: str, rounds: int) -> None:
    """Measure every pattern, with and without the workers' session settings, interleaved."""
    database = f"benchcommits{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        dsn = await scratch.tenant_database(admin, admin_dsn, database)
        print(
            f"{'pattern':<46} {'session settings':<17} {'client ms':>9} {'server ms':>9} "
            f"{'wall ms':>8}   per report, median of {rounds} interleaved rounds"
        )
        variants: tuple[tuple[str, Mapping[str, str]], ...] = (
            ("defaults", {}),
            ("workers'", store.SESSION_SETTINGS),
        )
        for pattern in PATTERNS:
            runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in variants}
            for _ in range(rounds):  # interleaved, so a busy moment of the machine hits both
                for label, settings in variants:
                    runs[label].append(await measure(dsn, pattern, settings))
            for label, _ in variants:
                median = {
                    key: statistics.median(r[key] for r in runs[label]) for key in runs[label][0]
                }
                print(
                    f"{pattern.name:<46} {label:<17} {median['client_ms']:9.3f} "
                    f"{median['server_ms']:9.3f} {median['wall_ms']:8.3f}"
                )
    finally:
        await admin.execute(f'drop database if exists "{database}" with (force)')
        await admin.close()


def main() -> None:
    """`make bench-commits`: parse the arguments and run, refusing bad ones with a message."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--admin-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a superuser DSN (a scratch database is created there and dropped after)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per pattern (median)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        asyncio.run(run(args.admin_dsn, args.rounds))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        parser.exit(1, f"bench-commits: cannot use --admin-dsn {args.admin_dsn!r}: {exc}\n")


if __name__ == "__main__":
    main()
