"""A tenant moved between two PostgreSQL servers under load, and backed up and restored
(`python -m services.bench.moving`, or `make bench-move`): the figures docs/scaling.md gives.

On two PostgreSQL servers of its own (deploy/local/pg-instance.sh, commit timestamps on) and a
vhost of the local RabbitMQ, it provisions tenant `big` and three others, seeds `big` with
`--reports` reports of the bench's mix (packages snapshots of ~2,000 entries included) through
the workers' own commit, runs the router and the workers as processes, keeps every tenant's
agents reporting, and runs `siloflow tenant move big --to second --keep-source`. Then
`tenant backup big` and `tenant restore` into a new tenant. How each figure is taken is printed
beside it. Everything it made is removed at the end, however it ends."""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from services.agent.client import AgentPublisher, Identity, build_report
from services.bench import workload
from services.bench.stage import (
    commit_times,
    host_port,
    namespace,
    pg_server,
    say,
    services,
    siloflow,
)
from services.core.broker.users import agent_url
from services.core.db import ServerAddress, at_server, provisioner_url
from services.core.hostkeys import load_keyring
from services.core.names import Names
from services.core.registry.queries import Placement
from services.core.settings import Settings
from services.ops import bindings, records
from services.ops.bootstrap import prepare_server
from services.ops.tenants import create_tenant, registry_connection
from services.workers import store
from services.workers.handlers import Report

HOSTS_PER_TENANT = 20
OTHERS = ("other-a", "other-b", "other-c")
RATE_PER_S = 60.0  # reports a second across every tenant while the move runs
STEADY_S = 8.0  # load before and after the move


async def _seed(
    settings: Settings, server: str, database: str, hosts: list[uuid.UUID], count: int
) -> float:
    """`count` reports of the bench's mix committed into the tenant's database as its workers
    would (store.commit_batch, batches of 500); returns the seconds it took."""
    address = ServerAddress(*host_port(server))
    url = at_server(provisioner_url(settings), address, database).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    rng = random.Random(1)
    packages = workload.packages_snapshot()
    started = time.perf_counter()
    try:
        await conn.execute(f'set role "{Names(settings.namespace).tenant_owner_role("big")}"')
        planned = workload.warm_up(len(hosts)) + workload.plan(len(hosts), count - len(hosts), 7)
        for start in range(0, len(planned), 500):
            batch = [
                Report(
                    uuid.uuid4(),
                    hosts[p.host_index],
                    p.kind,
                    datetime.now(UTC),
                    None,
                    workload.data(p.kind, p.host_index, rng, packages),
                )
                for p in planned[start : start + 500]
            ]
            await store.commit_batch(conn, batch)
    finally:
        await conn.close()
    return time.perf_counter() - started


class Load:
    """Heartbeats from every tenant's hosts at a steady rate, each publish time kept."""

    def __init__(self, settings: Settings, fleet: dict[str, list[Identity]]) -> None:
        self.settings, self.fleet = settings, fleet
        self.published: dict[str, tuple[str, float]] = {}  # message id -> (tenant, wall time)
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Publish until told to stop."""
        identities = [(slug, i) for slug, ids in self.fleet.items() for i in ids]
        rng = random.Random(3)
        async with AgentPublisher(agent_url(self.settings), self.settings.namespace) as agent:
            next_at = time.monotonic()
            while not self.stop.is_set():
                slug, identity = rng.choice(identities)
                data = workload.data("heartbeat", 0, rng, {})
                report = build_report("heartbeat", identity.host_id, data, identity=identity)
                await agent.publish(report)
                self.published[report.message_id] = (slug, time.time())
                next_at += 1 / RATE_PER_S
                await asyncio.sleep(max(next_at - time.monotonic(), 0))


async def run(reports: int) -> None:
    """Set up, seed, measure, remove."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(pg_server("first"))
        second = await stack.enter_async_context(pg_server("second"))
        say(f"servers: {first} (default), {second} (second)")
        settings = await namespace(stack, "benchmv", first, second)
        host, port = host_port(second)
        await prepare_server(settings, second, host, port)
        async with registry_connection(settings) as conn:
            await records.ensure_placement(conn, Placement("second", host, port))
            await conn.commit()
        keyring = load_keyring(settings)
        fleet: dict[str, list[Identity]] = {}
        databases: dict[str, str] = {}
        for slug, placement in [("big", "default"), *((o, "default") for o in OTHERS[:2])]:
            databases[slug] = (
                await create_tenant(settings, slug, placement=placement)
            ).tenant.db_name
        databases[OTHERS[2]] = (
            await create_tenant(settings, OTHERS[2], placement="second")
        ).tenant.db_name
        for slug in databases:
            fleet[slug] = []
            for _ in range(HOSTS_PER_TENANT):
                host_id = uuid.uuid4()
                await bindings.bind(settings, host_id, slug, move=False)
                fleet[slug].append(Identity(host_id, keyring.host_key(host_id), keyring.current))
        seeded_s = await _seed(
            settings, first, databases["big"], [i.host_id for i in fleet["big"]], reports
        )
        say(f"seeded big with {reports:,} reports in {seeded_s:.1f} s")
        await _measure(settings, first, second, databases, fleet)


async def _measure(
    settings: Settings,
    first: str,
    second: str,
    databases: dict[str, str],
    fleet: dict[str, list[Identity]],
) -> None:
    pg_first, pg_second = first.rsplit("/", 1)[0], second.rsplit("/", 1)[0]
    where = {slug: pg_first for slug in databases} | {OTHERS[2]: pg_second}
    load = Load(settings, fleet)
    async with services(settings, ("router",), ("workers",)):
        publishing = asyncio.create_task(load.run())
        await asyncio.sleep(STEADY_S)
        move_started = time.time()
        move_s, output = await siloflow(
            settings, "tenant", "move", "big", "--to", "second", "--keep-source"
        )
        move_ended = time.time()
        await asyncio.sleep(STEADY_S)
        load.stop.set()
        await publishing
        where["big"] = pg_second
        deadline = time.monotonic() + 120
        while True:
            committed: dict[str, dict[str, float]] = {
                slug: await commit_times(f"{where[slug]}/{db}") for slug, db in databases.items()
            }
            missing = [m for m, (slug, _) in load.published.items() if m not in committed[slug]]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    source = await commit_times(f"{pg_first}/{databases['big']}")
    target = committed["big"]
    after_switch = [t for m, t in target.items() if m not in source]
    paused_s = min(after_switch) - max(source.values()) if after_switch else float("nan")
    others = [
        m
        for m, (slug, at) in load.published.items()
        if slug != "big" and move_started <= at <= move_ended
    ]
    others_in_time = [
        m
        for m in others
        if committed[load.published[m][0]].get(m, float("inf")) <= move_ended + 1.0
    ]
    waits = [
        target[m] - at
        for m, (slug, at) in load.published.items()
        if slug == "big" and m in target and m not in source and move_started <= at <= move_ended
    ]
    copied = next((line for line in output.splitlines() if line.startswith("[copying]")), "")
    verified = next((line for line in output.splitlines() if line.startswith("[verifying]")), "")
    say("")
    say(f"tenant move big --to second: {move_s:.1f} s wall, the command's own clock")
    say(f"  {copied}")
    say(f"  {verified}")
    say(
        f"big's consumption paused {paused_s:.1f} s: from its last commit on the source to its "
        "first on the target (PostgreSQL commit timestamps, one clock)"
    )
    if waits:
        say(
            f"big's {len(waits)} reports published during the move waited up to "
            f"{max(waits):.1f} s (median {sorted(waits)[len(waits) // 2]:.1f} s) from publish to "
            "commit (publish wall clock to commit timestamp)"
        )
    say(
        f"other tenants during the move: {len(others_in_time)} of {len(others)} reports published "
        f"in it committed within 1 s of its end ({RATE_PER_S:.0f}/s offered across all tenants)"
    )
    lost = [m for m, (slug, _) in load.published.items() if m not in committed[slug]]
    say(f"lost: {len(lost)} of {len(load.published)} published")

    backup = Path(tempfile.mkdtemp(prefix="siloflow-bench-backup-")) / "big.backup"
    try:
        backup_s, _ = await siloflow(settings, "tenant", "backup", "big", "--out", str(backup))
        size = backup.stat().st_size
        restore_s, _ = await siloflow(
            settings,
            "tenant",
            "restore",
            "big-copy",
            "--from",
            str(backup),
            "--placement",
            "default",
        )
    finally:
        backup.unlink(missing_ok=True)
        backup.parent.rmdir()
    say(f"tenant backup big: {backup_s:.1f} s, {size / 2**20:,.1f} MiB file")
    say(f"tenant restore big-copy (a new tenant on the other server): {restore_s:.1f} s")


def main() -> None:
    """`python -m services.bench.moving [--reports N]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100_000, help="reports seeded into big")
    args = parser.parse_args()
    if args.reports < HOSTS_PER_TENANT:
        parser.error(f"--reports must be at least {HOSTS_PER_TENANT} (one per host)")
    asyncio.run(run(args.reports))


if __name__ == "__main__":
    main()
