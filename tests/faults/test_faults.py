"""Faults under steady load: services SIGKILLed, the broker and the database restarted, a tenant's
database and the registry unavailable, a broker resource alarm, the node leading a tenant's
quorum queue killed. Each scenario publishes a known set of reports while the fault happens and
fails if any report is lost, doubled or lands anywhere but its tenant's silo or its dead-letter
queue with its reason."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.core.names import Names
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
from tests.support import ADMIN_DSN, MANAGEMENT, MANAGEMENT_AUTH

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
            recovery_time(deployment.settings, deployment.databases, load, ended)
        )
        await asyncio.sleep(AFTER_S)
        load.stopped.set()
        await publishing
        found = await settle(deployment.settings, deployment.databases, load)
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
            deployment.databases, others, start, time.monotonic() - 2.0, load
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
