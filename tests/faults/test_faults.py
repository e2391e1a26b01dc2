"""Faults under steady load: services SIGKILLed, the broker and the database restarted, a tenant's
database and the registry unavailable, a broker resource alarm, the node leading a tenant's
quorum queue killed. Each scenario publishes a known set of reports while the fault happens and
fails if any report is lost, doubled or lands anywhere but its tenant's silo or its dead-letter
queue with its reason."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.agent.client import Identity
from services.catalog import store as catalog_store
from services.core.catalog.live import load_index
from services.core.catalog.matcher import Installed
from services.core.hostkeys import load_keyring
from services.core.names import Names
from services.core.settings import Settings
from services.ops import bindings as hosts
from tests.faults.conftest import Deployment, record
from tests.faults.harness import (
    Load,
    Services,
    Tally,
    account,
    committed_between,
    recovery_time,
    script,
    settle,
)
from tests.integration.pipeline import fetch, publish
from tests.reports import packages, report, system_info
from tests.support import ADMIN_DSN, MANAGEMENT, MANAGEMENT_AUTH, pg_base

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

RATE_PER_S = 40.0
BEFORE_S = 4.0  # load before the fault
AFTER_S = 6.0  # load after the fault ends

# A fault: does its damage while the load runs, and returns when it is over (monotonic time).
Fault = Callable[[Load, Services], Awaitable[float]]


async def scenario(deployment: Deployment, name: str, fault: Fault) -> Tally:
    """Run the services and a steady load, inject `fault`, then account for every report."""
    services = Services(deployment.settings, deployment.logdir)
    await services.start()
    load = Load(deployment.settings, deployment.fleet, RATE_PER_S)
    publishing = asyncio.create_task(load.run())
    recovering: asyncio.Task[float | None] | None = None
    try:
        await asyncio.sleep(BEFORE_S)
        ended = await fault(load, services)
        recovering = asyncio.create_task(
            recovery_time(deployment.settings, deployment.dsns(), load, ended)
        )
        await asyncio.sleep(AFTER_S)
        load.stopped.set()
        await publishing
        found = await settle(deployment.settings, deployment.dsns(), load)
        tally = account(name, load, found)
        tally.recovery_s = await recovering
        if load.resent:
            tally.notes.append(f"{len(load.resent)} publishes retried by the agent")
        restarts = {s.name: s.restarts for s in services.services.values() if s.restarts}
        if restarts:
            tally.notes.append(f"restarted by the process manager: {restarts}")
    finally:
        load.stopped.set()
        if recovering is not None:
            recovering.cancel()
        await services.stop()
    record(tally)
    return tally


def assert_exact(tally: Tally) -> None:
    problems = "\n".join(tally.problems[:20])
    assert tally.lost == 0, f"{tally.lost} lost:\n{problems}"
    assert tally.duplicated == 0, f"{tally.duplicated} doubled:\n{problems}"
    assert tally.misplaced == 0, f"{tally.misplaced} misplaced:\n{problems}"
    assert tally.committed > 0 and sum(tally.dead_lettered.values()) > 0
    assert tally.committed + sum(tally.dead_lettered.values()) == tally.published


# -- services killed ------------------------------------------------------------------------


async def _a_worker(services: Services) -> int:
    for _ in range(100):
        children = services.children("workers")
        if children:
            return children[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the worker supervisor has no workers")


@pytest.mark.parametrize("service", ["ingest", "router"])
async def test_sigkill_a_service_repeatedly(deployment: Deployment, service: str) -> None:
    async def fault(_load: Load, services: Services) -> float:
        for _ in range(3):
            os.kill(await services.wait_running(service), signal.SIGKILL)
            await asyncio.sleep(3.0)
        return time.monotonic()

    assert_exact(await scenario(deployment, f"SIGKILL {service} x3", fault))


async def test_sigkill_a_worker_repeatedly(deployment: Deployment) -> None:
    killed: list[int] = []

    async def fault(_load: Load, services: Services) -> float:
        for _ in range(3):
            await services.wait_running("workers")
            worker = await _a_worker(services)
            os.kill(worker, signal.SIGKILL)
            killed.append(worker)
            await asyncio.sleep(3.0)
        return time.monotonic()

    tally = await scenario(deployment, "SIGKILL a worker x3", fault)
    assert len(killed) == 3
    assert_exact(tally)


async def test_sigkill_the_worker_supervisor_repeatedly(deployment: Deployment) -> None:
    orphans: list[int] = []

    async def fault(_load: Load, services: Services) -> float:
        for _ in range(3):
            await services.wait_running("workers")
            await _a_worker(services)
            orphans.extend(services.children("workers"))
            os.kill(services.pid("workers"), signal.SIGKILL)
            await asyncio.sleep(3.0)
        return time.monotonic()

    tally = await scenario(deployment, "SIGKILL the worker supervisor x3", fault)
    assert_exact(tally)
    # The killed supervisors' workers must not live on beside the new ones.
    alive = [pid for pid in orphans if Path(f"/proc/{pid}").exists()]  # noqa: ASYNC240
    assert not alive, f"workers outlived their supervisor: {alive}"


# -- the sweeper killed during a re-evaluation ----------------------------------------------

CATALOG: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "services/catalog/data/debian12-security-fixes.json").read_text()
)
# What the second revision adds: sources every host of the real snapshot has installed, so every
# host is evaluated again.
ADDED_LATER = ("openssl", "glibc")
SNAPSHOT_HOSTS = 100  # hosts with the real snapshot beside the load's: a pass of a few seconds


async def _import(settings: Settings, tmp: Path, document: dict[str, Any]) -> int:
    path = tmp / f"catalog-{len(document)}.json"
    path.write_text(json.dumps(document))
    with path.open("rb") as stream:
        done = await catalog_store.import_feed(
            settings, stream, source=str(path), releases={"bookworm"}
        )
    assert done.current is not None
    return done.current


async def _at_revision(deployment: Deployment, revision: int) -> int:
    """Hosts whose findings are at `revision`, over every tenant database."""
    total = 0
    for database in deployment.databases.values():
        rows = await fetch(
            database,
            "select count(*) as n from host_findings_state where catalog_revision = $1",
            revision,
        )
        total += rows[0]["n"]
    return total


async def _until(what: Callable[[], Awaitable[bool]], timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await what():
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.02)


async def test_sigkill_the_sweeper_during_a_reevaluation(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A new catalog revision is re-evaluated by the sweeper while reports flow; the sweeper is
    SIGKILLed twice mid-pass (some hosts at the new revision, not all) and restarted: every host
    reaches the new revision, its open findings are what an evaluation from scratch gives, and
    no report is lost or doubled."""
    settings = deployment.settings
    first = await _import(
        settings, tmp_path, {k: v for k, v in CATALOG.items() if k not in ADDED_LATER}
    )
    keyring = load_keyring(settings)
    seeded: list[Identity] = []
    slugs = sorted(deployment.databases)
    for n in range(SNAPSHOT_HOSTS):
        host = uuid.uuid4()
        await hosts.bind(settings, host, slugs[n % len(slugs)], move=False)
        seeded.append(Identity(host, keyring.host_key(host), keyring.current))
    everyone = seeded + [i for ids in deployment.fleet.values() for i in ids]
    services = Services(
        settings, deployment.logdir, sweeper=True, env={"SILOFLOW_SWEEP_CONCURRENCY": "1"}
    )
    await services.start()
    load = Load(settings, deployment.fleet, RATE_PER_S)
    publishing: asyncio.Task[None] | None = None
    try:
        await publish(
            settings,
            [
                report(kind, i.host_id, data)
                for i in everyone
                for kind, data in (("system_info", system_info()), ("packages", packages()))
            ],
        )

        async def all_at(revision: int) -> bool:
            return await _at_revision(deployment, revision) == len(everyone)

        await _until(lambda: all_at(first), 120, "the snapshots were not all evaluated")
        publishing = asyncio.create_task(load.run())
        await asyncio.sleep(BEFORE_S)
        second = await _import(settings, tmp_path, CATALOG)
        killed_at: list[int] = []
        killed: set[int] = set()
        for _ in range(2):
            pid = await services.wait_running("sweeper")
            while pid in killed:  # not reaped yet: the restarted one comes after
                await asyncio.sleep(0.02)
                pid = await services.wait_running("sweeper")
            done = await _at_revision(deployment, second)

            async def under_way(before: int = done) -> bool:
                return await _at_revision(deployment, second) > before

            await _until(under_way, 60, "the sweeper made no progress")
            killed_at.append(await _at_revision(deployment, second))
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        last_kill = time.monotonic()
        await _until(lambda: all_at(second), 180, "the re-evaluation did not finish")
        ended = time.monotonic()
        await asyncio.sleep(AFTER_S)
        load.stopped.set()
        await publishing
        found = await settle(settings, deployment.dsns(), load)
        tally = account("SIGKILL the sweeper x2 mid re-evaluation", load, found)
        tally.recovery_s = ended - last_kill  # the restarted sweeper, to the last host
        tally.notes.append(
            f"killed with {', '.join(map(str, killed_at))} of {len(everyone)} hosts re-evaluated"
        )
    finally:
        load.stopped.set()
        if publishing is not None:
            await asyncio.gather(publishing, return_exceptions=True)
        await services.stop()
    record(tally)
    assert_exact(tally)
    # Each kill came mid-pass: some hosts at the new revision, not all.
    assert all(0 < n < len(everyone) for n in killed_at), killed_at
    index = await load_index(settings)
    assert index is not None and index.revision == second
    for database in deployment.databases.values():
        stored: dict[uuid.UUID, list[Installed]] = {}
        for r in await fetch(
            database,
            "select host_id, name, version, coalesce(source, name) as source, "
            "coalesce(source_version, version) as source_version from host_packages",
        ):
            stored.setdefault(r["host_id"], []).append(
                Installed(r["name"], r["version"], r["source"], r["source_version"])
            )
        for host, installed in stored.items():
            expected = {
                (i.package, a.cve_id) for i, a in index.match("bookworm", installed).findings
            }
            rows = await fetch(
                database,
                "select package, cve_id from findings where host_id = $1 and resolved_at is null",
                host,
            )
            assert sorted((r["package"], r["cve_id"]) for r in rows) == sorted(expected), host


# -- servers restarted -----------------------------------------------------------------------


async def test_rabbitmq_restarted(deployment: Deployment) -> None:
    async def fault(_load: Load, _services: Services) -> float:
        await asyncio.to_thread(script, "rabbit-cluster.sh", "restart")
        return time.monotonic()

    assert_exact(await scenario(deployment, "RabbitMQ cluster restarted", fault))


async def test_postgresql_crashed_and_restarted(deployment: Deployment) -> None:
    async def fault(_load: Load, _services: Services) -> float:
        await asyncio.to_thread(script, "pg-instance.sh", "crash")
        return time.monotonic()

    assert_exact(await scenario(deployment, "PostgreSQL crashed and restarted", fault))


# -- a database unavailable for a while --------------------------------------------------------


async def close_database(database: str, allow: bool) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'alter database "{database}" allow_connections {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1",
                database,
            )
    finally:
        await conn.close()


async def test_one_tenant_database_unavailable(deployment: Deployment) -> None:
    down, others = "globex", {"acme", "initech"}
    window: dict[str, tuple[int, int]] = {}

    async def fault(load: Load, _services: Services) -> float:
        await close_database(deployment.databases[down], allow=False)
        start = time.monotonic()
        await asyncio.sleep(15.0)
        # Others' throughput during the outage: of what they were sent in the window (less the
        # last two seconds, still in flight), how much was committed by its end.
        window["others"] = await committed_between(
            deployment.dsns(), others, start, time.monotonic() - 2.0, load
        )
        await close_database(deployment.databases[down], allow=True)
        return time.monotonic()

    tally = await scenario(deployment, f"tenant database {down} unavailable 15 s", fault)
    sent, committed = window["others"]
    share = committed / sent
    tally.notes.append(f"other tenants committed {share:.0%} of their reports during the outage")
    assert_exact(tally)  # globex's reports waited: none dead-lettered, all landed after
    assert share >= 0.9, f"other tenants committed only {committed} of {sent} during the outage"


async def test_the_registry_unavailable(deployment: Deployment) -> None:
    async def fault(_load: Load, _services: Services) -> float:
        registry = deployment.settings.registry_database
        await close_database(registry, allow=False)
        await asyncio.sleep(15.0)
        await close_database(registry, allow=True)
        return time.monotonic()

    assert_exact(await scenario(deployment, "registry unavailable 15 s", fault))


# -- the broker under a resource alarm; a cluster node lost -------------------------------------


async def test_a_memory_alarm_blocks_publishers_and_loses_nothing(deployment: Deployment) -> None:
    stalled: dict[str, int] = {}

    async def fault(load: Load, _services: Services) -> float:
        await asyncio.to_thread(
            script, "rabbit-cluster.sh", "ctl", "1", "set_vm_memory_high_watermark", "absolute", "1"
        )
        await asyncio.sleep(3.0)  # the alarm is raised on the next memory check
        before = len(load.published_at)
        await asyncio.sleep(8.0)
        stalled["published_during_alarm"] = len(load.published_at) - before
        await asyncio.to_thread(
            script,
            "rabbit-cluster.sh",
            "ctl",
            "1",
            "set_vm_memory_high_watermark",
            "absolute",
            "2GB",
        )
        return time.monotonic()

    tally = await scenario(deployment, "memory alarm 11 s", fault)
    tally.notes.append(
        f"{stalled['published_during_alarm']} publishes confirmed in 8 s of alarm (40/s offered)"
    )
    assert_exact(tally)
    assert stalled["published_during_alarm"] <= 2, "publishers were not blocked by the alarm"


async def queue_leader(vhost: str, queue: str) -> str:
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        response = await api.get(f"/queues/{vhost}/{queue}")
        response.raise_for_status()
        return str(response.json()["leader"])


async def test_killing_the_node_that_leads_a_tenant_queue(deployment: Deployment) -> None:
    """The services stay connected to node 1; the tenant `delta` is provisioned through node 2, so
    its quorum queue's leader is node 2 (client-local placement). Kill node 2 under load."""
    node2 = os.environ["SILOFLOW_FAULTS_NODE2_AMQP"]
    settings = deployment.settings
    via_node2 = settings.model_copy(update={"amqp_url": f"{node2}/{settings.namespace}"})
    if "delta" not in deployment.databases:
        await deployment.add_tenant("delta", via_node2)
    queue = Names(settings.namespace).tenant_queue("delta")
    leader = await queue_leader(settings.namespace, queue)
    assert leader.startswith("sf-rabbit-2@"), f"delta's queue is led by {leader}, not node 2"
    after: dict[str, str] = {}

    async def fault(_load: Load, _services: Services) -> float:
        await asyncio.to_thread(script, "rabbit-cluster.sh", "kill", "2")
        await asyncio.sleep(10.0)
        after["leader"] = await queue_leader(settings.namespace, queue)
        await asyncio.to_thread(script, "rabbit-cluster.sh", "revive", "2")
        return time.monotonic()

    tally = await scenario(deployment, "node leading delta's queue SIGKILLed", fault)
    tally.notes.append(f"delta's queue leader: {leader}, then {after['leader']} while it was down")
    assert_exact(tally)
    assert not after["leader"].startswith("sf-rabbit-2@")


# -- a tenant moved between servers under load --------------------------------------------------

SECOND_PORT = os.environ.get("SILOFLOW_FAULTS_PG2_PORT", "5442")
SECOND = f"postgresql://postgres@127.0.0.1:{SECOND_PORT}"
SECOND_ENV = {
    "SILOFLOW_PG_PORT": SECOND_PORT,
    "SILOFLOW_PG_DIR": os.environ.get("SILOFLOW_FAULTS_PG2_DIR", ""),
}


async def _second_placement(deployment: Deployment) -> None:
    """The second server, prepared and recorded as placement `second` (once)."""
    from tests.support import invoke_cli  # noqa: PLC0415

    done = await invoke_cli(
        [
            *("placement", "add", "second", "--host", "127.0.0.1", "--port", SECOND_PORT),
            *("--admin-dsn", f"{SECOND}/postgres"),
        ],
        deployment.settings,
    )
    assert done.exit_code == 0, done.output


async def _move_step(deployment: Deployment, slug: str) -> str | None:
    conn = await asyncpg.connect(deployment.settings.registry_url)
    try:
        return await conn.fetchval(
            "select m.step from registry_tenant_moves m join registry_tenants t "
            "on t.id = m.tenant_id where t.slug = $1",
            slug,
        )
    finally:
        await conn.close()


async def _tenant_move(deployment: Deployment, *args: str) -> asyncio.subprocess.Process:
    from tests.support import env_for  # noqa: PLC0415

    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "services.cli", "tenant", "move", *args),
        env=env_for(deployment.settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def _resumed_until_done(deployment: Deployment, slug: str) -> int:
    """Run `tenant move SLUG` again until it finishes (a server may still be recovering);
    returns how many runs it took."""
    for attempt in range(1, 31):
        process = await _tenant_move(deployment, slug)
        _, said = await process.communicate()
        if process.returncode == 0:
            return attempt
        log_line = said.decode(errors="replace").strip().splitlines()[-1:] or [""]
        print(f"tenant move {slug}, run {attempt}: {log_line[0]}")
        await asyncio.sleep(1.0)
    raise AssertionError(f"tenant move {slug} never finished")


async def _ledger(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            str(r["message_id"]) for r in await conn.fetch("select message_id from agent_messages")
        }
    finally:
        await conn.close()


async def _moved_scenario(
    deployment: Deployment, slug: str, name: str, interrupt: Callable[[], Awaitable[bool]]
) -> Tally:
    """Add tenant `slug` and move it to the second server while the load runs: once the move is
    copying (its source fenced), `interrupt` is done to it (and the command SIGKILLed if it
    says so); then `tenant move SLUG` is run again until it finishes. The kept source must be as
    it was when fenced (nothing committed there since) and hold nothing the target lacks."""
    await deployment.add_tenant(slug)
    at_fence: list[set[str]] = []
    notes: list[str] = []
    source = f"{pg_base()}/{deployment.databases[slug]}"

    async def fault(_load: Load, _services: Services) -> float:
        process = await _tenant_move(deployment, slug, "--to", "second", "--keep-source")
        while await _move_step(deployment, slug) != "copying":
            assert process.returncode is None, "the move ended before it was copying"
            await asyncio.sleep(0.005)
        at_fence.append(await _ledger(source))
        if await interrupt():
            process.kill()
            await process.wait()
            notes.append(f"the move SIGKILLed at step {await _move_step(deployment, slug)}")
        else:  # the move meets the interruption itself, and stops or rides it out
            _, said = await asyncio.wait_for(process.communicate(), 120)
            last = said.decode(errors="replace").strip().splitlines()[-1:] or ["-"]
            notes.append(f"the move exited {process.returncode}: {last[0][:200]}")
            if process.returncode != 0:  # one line that says where it stopped and what next
                assert "to resume it" in last[0], said.decode(errors="replace")
        runs = await _resumed_until_done(deployment, slug)
        deployment.servers[slug] = SECOND
        notes.append(f"`tenant move {slug}` run {runs} more time(s) to finish")
        return time.monotonic()

    tally = await scenario(deployment, name, fault)
    tally.notes += notes
    on_source = await _ledger(source)
    on_target = await _ledger(f"{SECOND}/{deployment.databases[slug]}")
    assert on_source == at_fence[0], "something was committed on the source after its fence"
    assert on_source <= on_target, f"{len(on_source - on_target)} committed only on the source"
    tally.notes.append(f"{len(on_source)} reports on the fenced source, all on the target")
    return tally


async def test_a_tenant_moved_under_load_with_the_move_sigkilled_mid_copy(
    deployment: Deployment,
) -> None:
    await _second_placement(deployment)

    async def sigkill() -> bool:
        return True

    tally = await _moved_scenario(
        deployment, "moved-a", "tenant moved, the move SIGKILLed mid-copy", sigkill
    )
    assert_exact(tally)


async def test_a_tenant_moved_under_load_with_the_target_server_crashed(
    deployment: Deployment,
) -> None:
    await _second_placement(deployment)

    async def crash_the_target() -> bool:
        await asyncio.to_thread(script, "pg-instance.sh", "crash", env=SECOND_ENV)
        return False

    tally = await _moved_scenario(
        deployment, "moved-b", "tenant moved, the target server crashed mid-move", crash_the_target
    )
    assert_exact(tally)
