"""Delivery guarantees under trouble, on the real broker and database: the router's cache follows
registry changes, a worker batches what arrives while a commit is held up (and only then) and
stops while a batch waits, a tenant database that is down holds its reports while others flow, a
worker killed mid-run loses and doubles nothing, and services reconnect and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from services.bench.processes import free_port
from services.core.names import Names
from services.core.settings import Settings
from services.ops import bindings as hosts
from services.ops.tenants import create_tenant, set_tenant_status
from services.router import app as router_app
from services.router.directory import RouterDirectory
from services.workers import app as workers_app
from tests.integration.pipeline import (
    PG,
    Env,
    bound_host,
    commits_of,
    committed_ids,
    dead_letters,
    fetch,
    publish,
    route,
)
from tests.reports import report
from tests.support import ADMIN_DSN, MANAGEMENT, MANAGEMENT_AUTH, admin_fetch, env_for

DEADLINE_S = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until `check` holds (the thing under test runs concurrently), or fail."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_router_cache_follows_bindings_and_tenant_status(env: Env) -> None:
    directory = RouterDirectory(env.settings)
    await directory.start()
    try:
        assert await directory.wait_listening(10)
        host = uuid.uuid4()
        assert await directory.lookup(host) == (None, None)
        misses = directory.misses
        assert await directory.lookup(host) == (None, None)
        assert directory.misses == misses, "the negative answer was not cached"

        await hosts.bind(env.settings, host, env.a.slug, move=False)

        async def bound() -> bool:
            binding, tenant = await directory.lookup(host)
            return binding is not None and tenant is not None and tenant.slug == env.a.slug

        await eventually(bound, "the router sees the new binding")

        await hosts.bind(env.settings, host, env.b.slug, move=True)

        async def moved() -> bool:
            _, tenant = await directory.lookup(host)
            return tenant is not None and tenant.slug == env.b.slug

        await eventually(moved, "the router sees the move")

        await set_tenant_status(env.settings, env.b.slug, "suspended")
        try:

            async def suspended() -> bool:
                _, tenant = await directory.lookup(host)
                return tenant is not None and tenant.status == "suspended"

            await eventually(suspended, "the router sees the suspension")
        finally:
            await set_tenant_status(env.settings, env.b.slug, "active")
    finally:
        await directory.close()


async def test_a_running_router_routes_a_host_bound_after_its_first_report(env: Env) -> None:
    stop = asyncio.Event()
    router = asyncio.create_task(router_app.run(env.settings, stop=stop))
    try:
        host = uuid.uuid4()
        first = report("heartbeat", host)
        await publish(env.settings, [first])

        async def first_unrouted() -> bool:
            letters = await dead_letters(env.settings, "unrouted")
            return any(d["message_id"] == first.message_id for d in letters)

        await eventually(first_unrouted, "the unbound host's report is dead-lettered")
        await hosts.bind(env.settings, host, env.a.slug, move=False)
        second = report("heartbeat", host)
        await publish(env.settings, [second])

        async def second_committed() -> bool:
            await workers_app.run(env.settings, tenants={env.a.slug}, burst=True)
            return uuid.UUID(second.message_id) in await committed_ids(env.a.db_name)

        await eventually(second_committed, "the second report lands in tenant acme")
    finally:
        stop.set()
        await router


async def test_a_tenant_database_down_holds_its_reports_while_others_flow(env: Env) -> None:
    down = (await create_tenant(env.settings, "hooli")).tenant
    host_down, host_up = await bound_host(env, down), await bound_host(env, env.a)
    held = [report("heartbeat", host_down) for _ in range(20)]
    flowing = [report("heartbeat", host_up) for _ in range(20)]
    await publish(env.settings, held + flowing)
    await router_app.run(env.settings, burst=True)

    await admin(f'alter database "{down.db_name}" allow_connections false')
    await admin(
        f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{down.db_name}'"
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        workers = asyncio.create_task(
            workers_app.run(env.settings, tenants={env.a.slug, down.slug}, stop=stop)
        )
        try:
            flowing_ids = {uuid.UUID(r.message_id) for r in flowing}

            async def others_flow() -> bool:
                return flowing_ids <= set(await committed_ids(env.a.db_name))

            await eventually(others_flow, "tenant acme's reports commit while hooli is down")

            async def retried() -> bool:  # hooli's batch was tried, refused and tried again
                return tries_of(logs, "worker.database_unavailable", tenant=down.slug) >= 2

            await eventually(retried, "the worker retries hooli's batch")
            failed = {d["message_id"] for d in await dead_letters(env.settings, "failed")}
            assert not failed & {r.message_id for r in held}, "reports were dead-lettered"

            await admin(f'alter database "{down.db_name}" allow_connections true')
            held_ids = {uuid.UUID(r.message_id) for r in held}

            async def recovered() -> bool:
                return held_ids <= set(await committed_ids(down.db_name))

            await eventually(recovered, "hooli's held reports land once it is back")
        finally:
            await admin(f'alter database "{down.db_name}" allow_connections true')
            stop.set()
            await workers
    # Every held report, and nothing else (a second commit of one is impossible by the ledger's
    # primary key: tests/integration/test_store.py proves a redelivery is dropped).
    assert set(await committed_ids(down.db_name)) == {uuid.UUID(r.message_id) for r in held}


async def test_a_worker_killed_mid_run_loses_and_doubles_nothing(env: Env) -> None:
    hosts_ = [await bound_host(env, env.b) for _ in range(10)]
    sent = [report("heartbeat", hosts_[i % 10]) for i in range(1500)]
    await publish(env.settings, sent)
    await router_app.run(env.settings, burst=True)
    before = set(await committed_ids(env.b.db_name))

    environment = env_for(env.settings) | {"SILOFLOW_BATCH_MAX": "25", "SILOFLOW_PREFETCH": "100"}
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "run",
        "workers",
        "--tenant",
        env.b.slug,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def some_committed() -> bool:
            return len(set(await committed_ids(env.b.db_name)) - before) > 0

        await eventually(some_committed, "the worker commits its first batches")
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
        at_kill = len(set(await committed_ids(env.b.db_name)) - before)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert at_kill < len(sent), "the worker finished before it was killed: nothing was tested"

    async def its_sessions_ended() -> bool:  # a commit in flight at the kill has finished
        sessions = await admin_fetch(
            "select count(*) from pg_stat_activity where datname = $1", env.b.db_name
        )
        return int(sessions[0][0]) == 0

    await eventually(its_sessions_ended, "the killed worker's database sessions end")
    committed_by_it = len(set(await committed_ids(env.b.db_name)) - before)
    commits_before = commits_of(env.b.slug)
    await workers_app.run(env.settings, tenants={env.b.slug}, burst=True)
    ids = set(await committed_ids(env.b.db_name))
    assert {uuid.UUID(r.message_id) for r in sent} <= ids, "a report was lost"
    assert len(ids - before) == len(sent), "a report nobody sent was committed"
    # The killed worker's unacked batches come back; what it had committed is dropped as a
    # duplicate (the ledger's primary key), so the reports committed anew here are exactly the
    # ones it had not: a double commit would show as more.
    assert commits_of(env.b.slug) - commits_before == len(sent) - committed_by_it


async def test_services_reconnect_after_their_connections_are_cut(env: Env) -> None:
    stop = asyncio.Event()
    services = [
        asyncio.create_task(router_app.run(env.settings, stop=stop)),
        asyncio.create_task(workers_app.run(env.settings, tenants={env.a.slug}, stop=stop)),
    ]
    host = await bound_host(env, env.a)
    try:
        first = report("heartbeat", host)
        await publish(env.settings, [first])

        async def committed(r: object) -> bool:
            return uuid.UUID(r.message_id) in await committed_ids(env.a.db_name)  # type: ignore[attr-defined]

        await eventually(lambda: committed(first), "the first report lands")

        # Cut every broker connection of this vhost, and every database session of the
        # registry and the tenant: what a broker or PostgreSQL restart does to a client.
        async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
            connections: list[dict[str, object]] = []

            async def listed() -> bool:  # the management API learns of connections lazily
                nonlocal connections
                found = await api.get(f"/vhosts/{env.settings.namespace}/connections")
                connections = found.json()
                names = {
                    str(c.get("client_properties", {}).get("connection_name"))  # type: ignore[union-attr]
                    for c in connections
                }
                return "siloflow router" in names and any(
                    n.startswith("siloflow workers") for n in names
                )

            await eventually(listed, "the services' broker connections are listed")
            for c in connections:
                await api.delete(f"/connections/{c['name']}")
        for database in (env.settings.registry_database, env.a.db_name):
            await admin(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                f"where datname = '{database}' and pid <> pg_backend_pid()"
            )

        second = report("heartbeat", host)
        await publish(env.settings, [second])
        await eventually(lambda: committed(second), "a report lands after the reconnection")
    finally:
        stop.set()
        await asyncio.gather(*services)


def test_run_all_stops_cleanly_on_sigterm(env: Env, tmp_path: Path) -> None:
    log_path = tmp_path / "run-all.log"
    started = (
        '"event": "ingest.started"',
        '"event": "router.started"',
        '"event": "worker.consuming"',
        '"event": "api.starting"',
    )
    with (
        log_path.open("w") as log_file,
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "all"],
            env=env_for(env.settings)
            | {"SILOFLOW_WORKER_PROCESSES": "2", "SILOFLOW_API_PORT": str(free_port())},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        ) as process,
    ):
        try:
            deadline = time.monotonic() + DEADLINE_S
            # The services' own log says when they consume (the management API's consumer
            # counts lag by seconds and may still show an earlier test's consumers).
            while not all(event in log_path.read_text() for event in started):
                assert time.monotonic() < deadline, "the services did not start consuming"
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
    log = log_path.read_text()
    assert code == 0, log
    for service in ("ingest", "router", "workers", "api"):
        assert f'"event": "{service}.stopped"' in log, f"{service} did not stop cleanly:\n{log}"


async def test_workers_follow_tenants_created_and_suspended(env: Env) -> None:
    stop = asyncio.Event()
    workers = asyncio.create_task(workers_app.run(env.settings, stop=stop))  # every tenant
    try:
        tenant = (await create_tenant(env.settings, "pied-piper")).tenant
        host = await bound_host(env, tenant)
        first = report("heartbeat", host)
        await publish(env.settings, [first])
        await router_app.run(env.settings, burst=True)

        async def landed() -> bool:
            return uuid.UUID(first.message_id) in await committed_ids(tenant.db_name)

        await eventually(landed, "a tenant created after the workers started gets its reports")

        await set_tenant_status(env.settings, tenant.slug, "suspended")

        async def unconsumed() -> bool:
            async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
                queue = Names(env.settings.namespace).tenant_queue(tenant.slug)
                found = (await api.get(f"/queues/{env.settings.namespace}/{queue}")).json()
                return int(found.get("consumers", 1)) == 0

        await eventually(unconsumed, "the suspended tenant's queue loses its consumer")
    finally:
        stop.set()
        await workers


async def test_the_router_holds_reports_while_the_registry_is_down(env: Env) -> None:
    host = await bound_host(env, env.a)
    held = report("heartbeat", host)
    await publish(env.settings, [held])
    registry = env.settings.registry_database
    await admin(f'alter database "{registry}" allow_connections false')
    await admin(
        f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{registry}'"
    )
    stop = asyncio.Event()
    misses = lookups("miss")
    with capture_logs() as logs:
        router = asyncio.create_task(router_app.run(env.settings, stop=stop))

        async def retried() -> bool:  # the router asked, was refused, and asked again
            return lookups("miss") - misses >= 2

        await eventually(retried, "the router retries against a registry that refuses it")
        try:
            unrouted = {d["message_id"] for d in await dead_letters(env.settings, "unrouted")}
            assert held.message_id not in unrouted, "a registry outage dead-lettered a report"
            await admin(f'alter database "{registry}" allow_connections true')

            async def routed() -> bool:
                await workers_app.run(env.settings, tenants={env.a.slug}, burst=True)
                return uuid.UUID(held.message_id) in await committed_ids(env.a.db_name)

            await eventually(routed, "the held report is routed once the registry is back")
        finally:
            await admin(f'alter database "{registry}" allow_connections true')
            stop.set()
            await router
    # Said once, however many times it asked: the outage, then its end.
    said = [e for e in logs if e["event"] == "router.registry_unavailable"]
    warned = [e for e in said if e["log_level"] == "warning"]
    assert len(warned) == 1 and {e["log_level"] for e in said} <= {"warning", "debug"}, said
    assert "SILOFLOW_REGISTRY_DSN" in warned[0]["error"]
    assert tries_of(logs, "router.registry_unavailable.recovered") == 1


def lookups(result: str) -> float:
    """Router lookups of this process so far, by result (hit or miss)."""
    return REGISTRY.get_sample_value("siloflow_router_lookups_total", {"result": result}) or 0.0


def tries_of(logs: list[dict[str, object]], event: str, **fields: object) -> int:
    """How often `event` was logged (with these fields), in what capture_logs holds."""
    return sum(
        1 for e in logs if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
    )


async def unacknowledged(settings: Settings, slug: str) -> int | None:
    """Deliveries of the tenant's queue a consumer holds, as the broker counts them."""
    queue = Names(settings.namespace).tenant_queue(slug)
    async with httpx.AsyncClient(auth=MANAGEMENT_AUTH) as api:
        found = (await api.get(f"{MANAGEMENT}/api/queues/{settings.namespace}/{queue}")).json()
    count = found.get("messages_unacknowledged")
    return None if count is None else int(count)


async def test_reports_arriving_during_a_commit_are_the_next_batch(env: Env) -> None:
    """No fixed wait for a batch to fill: a lone report's commit starts at once, and what
    arrives while it is held up is committed together, in one next transaction."""
    settings = env.settings.model_copy(update={"batch_wait_s": 0.0})
    host = await bound_host(env, env.a)
    first, later = report("heartbeat", host), [report("heartbeat", host) for _ in range(5)]
    await route(settings, [first])

    # Hold the tenant's commits: its first statement waits for this lock.
    blocker = await asyncpg.connect(PG.format(db=env.a.db_name))
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("lock table agent_messages in exclusive mode")
    batches_before = REGISTRY.get_sample_value("siloflow_batch_reports_count") or 0.0
    reports_before = REGISTRY.get_sample_value("siloflow_batch_reports_sum") or 0.0
    stop = asyncio.Event()
    workers = asyncio.create_task(workers_app.run(settings, tenants={env.a.slug}, stop=stop))
    try:

        async def first_commit_waits() -> bool:
            rows = await fetch(
                "postgres",
                "select count(*) as n from pg_stat_activity "
                "where datname = $1 and wait_event_type = 'Lock'",
                env.a.db_name,
            )
            return bool(rows[0]["n"])

        await eventually(first_commit_waits, "the lone report's commit starts")
        await route(settings, later)

        async def all_in_hand() -> bool:
            return await unacknowledged(settings, env.a.slug) == 1 + len(later)

        await eventually(all_in_hand, "the worker holds the later reports too")
        await lock.rollback()
        wanted = {uuid.UUID(r.message_id) for r in [first, *later]}

        async def committed() -> bool:
            return wanted <= set(await committed_ids(env.a.db_name))

        await eventually(committed, "every report is committed")
    finally:
        if not blocker.is_closed():
            await blocker.close()
        stop.set()
        await workers
    batches = (REGISTRY.get_sample_value("siloflow_batch_reports_count") or 0.0) - batches_before
    reports = (REGISTRY.get_sample_value("siloflow_batch_reports_sum") or 0.0) - reports_before
    assert (batches, reports) == (2, 1 + len(later))


async def test_a_report_to_a_quiet_tenant_waits_for_no_batch(env: Env) -> None:
    """A batch waits to fill only while its tenant is busy: with a wait of 10 s configured, the
    first report of a quiet tenant is committed long before the wait would have let it go."""
    settings = env.settings.model_copy(update={"batch_wait_s": 10.0})
    host = await bound_host(env, env.b)
    lone = report("heartbeat", host)
    await route(settings, [lone])
    stop = asyncio.Event()
    started = time.monotonic()
    workers = asyncio.create_task(workers_app.run(settings, tenants={env.b.slug}, stop=stop))
    try:

        async def committed() -> bool:
            return uuid.UUID(lone.message_id) in set(await committed_ids(env.b.db_name))

        await eventually(committed, "the lone report is committed")
        assert time.monotonic() - started < 8.0, "the report waited for its batch to fill"
    finally:
        stop.set()
        await workers


async def test_a_worker_told_to_stop_while_a_batch_waits_commits_it_and_ends(env: Env) -> None:
    """A busy tenant's batch is waiting to fill when the worker is told to stop: the wait is cut
    short, the batch committed, and the worker ends. (It once took the batch after stop's
    wake-up and then waited for deliveries that, its consumer cancelled, could never come.)"""
    settings = env.settings.model_copy(update={"batch_wait_s": 10.0})
    host = await bound_host(env, env.a)
    first, second = report("heartbeat", host), report("heartbeat", host)
    stop = asyncio.Event()
    workers = asyncio.create_task(workers_app.run(settings, tenants={env.a.slug}, stop=stop))
    try:
        await route(settings, [first])

        async def first_committed() -> bool:
            return uuid.UUID(first.message_id) in set(await committed_ids(env.a.db_name))

        # Committed at once (the tenant was quiet); from now on the tenant is busy.
        await eventually(first_committed, "the first report is committed")
        await route(settings, [second])

        async def second_waits() -> bool:
            return await unacknowledged(settings, env.a.slug) == 1

        await eventually(second_waits, "the worker holds the second report, waiting to fill")
    finally:
        stop.set()
        await asyncio.wait_for(workers, timeout=8.0)  # under the 10 s wait: it was cut short
    assert uuid.UUID(second.message_id) in set(await committed_ids(env.a.db_name))
