"""Tenants on two PostgreSQL servers, as docs/scaling.md tells an operator to set them up: the
second server prepared by `placement add --admin-dsn`, errors that name the server they are
about, each report committed on its tenant's server, `migrate` walking both, the second server
down holding its tenants' reports while the first's commit, and `tenant delete` and `teardown`
leaving nothing on either."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.domain import TenantStatus
from services.core.names import Names
from services.core.pgadmin import set_role
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.ops import bindings, migrate, records
from services.ops import chains as migrator
from services.ops.bootstrap import bootstrap
from services.ops.tenants import create_tenant, registry_connection
from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.conftest import Server
from tests.integration.pipeline import Env, bound_host, dead_letters, drain, publish, route
from tests.reports import report
from tests.support import (
    ADMIN_DSN,
    MANAGEMENT,
    MANAGEMENT_AUTH,
    admin_fetch,
    drop_namespace,
    env_for,
    invoke_cli,
    new_namespace,
    settings_for,
)

DEADLINE_S = 30.0


@dataclass
class Spread:
    """A deployment with tenant `near` on the registry's server and `far` on the second."""

    settings: Settings
    server: Server
    near: TenantRecord
    far: TenantRecord

    @property
    def env(self) -> Env:
        return Env(self.settings, self.near, self.far)


async def on(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def names_on(server_dsn: str, namespace: str) -> set[str]:
    """Every database and role of the namespace on one server."""
    pattern = namespace + r"\_%"
    rows = await on(
        server_dsn,
        "select datname as name from pg_database where datname like $1 "
        "union all select rolname from pg_roles where rolname like $1",
        pattern,
    )
    return {r["name"] for r in rows}


async def committed(dsn: str) -> set[uuid.UUID]:
    return {r["message_id"] for r in await on(dsn, "select message_id from agent_messages")}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until `check` holds (the thing under test runs concurrently), or fail."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


async def deployed_with_second(settings: Settings, server: Server) -> None:
    """Bootstrap and migrate the deployment, and prepare `server` as placement `second`, as
    docs/scaling.md tells an operator to."""
    await bootstrap(settings, ADMIN_DSN)
    await migrate.migrate(settings)
    where = ["--host", server.host, "--port", str(server.port)]
    added = await invoke_cli(
        ["placement", "add", "second", *where, "--admin-dsn", server.admin_dsn], settings
    )
    assert added.exit_code == 0, added.output


@pytest.fixture(scope="module")
async def spread(second_server: Server) -> AsyncIterator[Spread]:
    namespace = new_namespace()
    settings = settings_for(namespace)
    try:
        await deployed_with_second(settings, second_server)
        near = (await create_tenant(settings, "near")).tenant
        far = (await create_tenant(settings, "far", placement="second")).tenant
        yield Spread(settings, second_server, near, far)
    finally:
        await drop_namespace(namespace)
        await _drop_roles_and_databases(second_server, namespace)


async def _drop_roles(server: Server, namespace: str) -> None:
    roles = await on(
        server.admin_dsn, "select rolname from pg_roles where rolname like $1", namespace + r"\_%"
    )
    for row in sorted(roles, key=lambda r: r["rolname"].endswith("_provisioner")):
        await on(server.admin_dsn, f'drop owned by "{row["rolname"]}"')
        await on(server.admin_dsn, f'drop role if exists "{row["rolname"]}"')


async def test_an_unprepared_server_is_named_and_placement_add_prepares_it(
    fresh_namespace: Callable[..., Settings], second_server: Server
) -> None:
    settings = fresh_namespace()
    await bootstrap(settings, ADMIN_DSN)
    await migrate.migrate(settings)
    where = ["--host", second_server.host, "--port", str(second_server.port)]
    try:
        recorded = await invoke_cli(["placement", "add", "second", *where], settings)
        assert recorded.exit_code == 0, recorded.output
        assert "--admin-dsn <that server's superuser DSN>" in recorded.output

        refused = await invoke_cli(["tenant", "create", "far", "--placement", "second"], settings)
        assert refused.exit_code == 1, refused.output
        server = f"{second_server.host}:{second_server.port}"
        assert f"PostgreSQL at {server}" in refused.output, refused.output
        assert "not prepared" in refused.output and "127.0.0.1:5432" not in refused.output
        listed = await invoke_cli(["tenant", "list", "--json"], settings)
        assert listed.exit_code == 0 and listed.output.strip() == "[]", listed.output

        # A DSN of another server than the placement's is refused before anything changes.
        wrong = await invoke_cli(
            ["placement", "add", "second", *where, "--admin-dsn", ADMIN_DSN], settings
        )
        assert wrong.exit_code != 0 and "give that server's superuser DSN" in wrong.output
        assert not await names_on(second_server.admin_dsn, settings.namespace)

        prepared = await invoke_cli(
            ["placement", "add", "second", *where, "--admin-dsn", second_server.admin_dsn],
            settings,
        )
        assert prepared.exit_code == 0, prepared.output
        assert f"created role {settings.namespace}_provisioner on {server}" in prepared.output
        created = await invoke_cli(["tenant", "create", "far", "--placement", "second"], settings)
        assert created.exit_code == 0, created.output
        assert Names(settings.namespace).tenant_database("far") in await names_on(
            second_server.admin_dsn, settings.namespace
        )
    finally:
        await _drop_roles_and_databases(second_server, settings.namespace)


async def _drop_roles_and_databases(server: Server, namespace: str) -> None:
    for row in await on(
        server.admin_dsn,
        "select datname from pg_database where datname like $1",
        namespace + r"\_%",
    ):
        await on(server.admin_dsn, f'drop database if exists "{row["datname"]}" with (force)')
    await _drop_roles(server, namespace)


async def test_each_report_is_committed_on_its_tenants_server(spread: Spread) -> None:
    env = spread.env
    near_host, far_host = await bound_host(env, spread.near), await bound_host(env, spread.far)
    near = [report("heartbeat", near_host) for _ in range(5)]
    far = [report("system_info", far_host)] + [report("heartbeat", far_host) for _ in range(5)]
    await publish(spread.settings, near + far)
    await drain(spread.settings)

    on_first = await committed(f"postgresql://postgres@127.0.0.1:5432/{spread.near.db_name}")
    on_second = await committed(spread.server.dsn(spread.far.db_name))
    assert {uuid.UUID(r.message_id) for r in near} <= on_first
    assert {uuid.UUID(r.message_id) for r in far} <= on_second
    assert not on_first & {uuid.UUID(r.message_id) for r in far}
    # far's database exists on the second server only.
    assert not await admin_fetch("select 1 from pg_database where datname = $1", spread.far.db_name)
    # The workers reached it with a short-lived login of far's own, issued on the second
    # server (the only way they reach a tenant database) and revoked there when they stopped.
    logins = await on(
        spread.server.admin_dsn,
        "select rolname from pg_roles where rolname like $1",
        Names(spread.settings.namespace).login_prefix.replace("_", r"\_") + "%",
    )
    assert not logins, logins


async def test_migrate_walks_the_tenants_of_every_server(spread: Spread) -> None:
    url = at_server(
        provisioner_url(spread.settings),
        ServerAddress(spread.server.host, spread.server.port),
        spread.far.db_name,
    )
    async with one_connection(url, spread.settings) as conn:
        await set_role(conn, Names(spread.settings.namespace).tenant_owner_role("far"))
        await migrator.downgrade(conn, "tenant", "base")
        await conn.commit()

    done = await invoke_cli(["migrate", "--json"], spread.settings)
    assert done.exit_code == 0, done.output
    applied = {t["target"]: t["applied"] for t in json.loads(done.output)["targets"]}
    assert applied["tenant far"] == migrator.pending_revisions("tenant", None)
    plan = await migrate.plan(spread.settings)
    states = {t.label: (t.current, t.head, t.error) for t in plan.targets}
    head = migrator.head_revision("tenant")
    assert states["tenant far"] == (head, head, None)
    assert states["tenant near"] == (head, head, None)


async def test_with_the_second_server_down_its_tenants_reports_wait_then_land(
    spread: Spread,
) -> None:
    env = spread.env
    far_host, near_host = await bound_host(env, spread.far), await bound_host(env, spread.near)
    held = [report("heartbeat", far_host) for _ in range(20)]
    flowing = [report("heartbeat", near_host) for _ in range(20)]
    await publish(spread.settings, held + flowing)
    await router_app.run(spread.settings, burst=True)
    held_ids = {uuid.UUID(r.message_id) for r in held}
    far_dsn = spread.server.dsn(spread.far.db_name)
    near_dsn = f"postgresql://postgres@127.0.0.1:5432/{spread.near.db_name}"
    queue = Names(spread.settings.namespace).tenant_queue("far")

    await asyncio.to_thread(spread.server.script, "down")
    stop = asyncio.Event()
    workers = asyncio.create_task(
        workers_app.run(spread.settings, tenants={"near", "far"}, stop=stop)
    )
    try:

        async def near_commits() -> bool:
            return {uuid.UUID(r.message_id) for r in flowing} <= await committed(near_dsn)

        await eventually(near_commits, "near's reports commit while the second server is down")

        async def far_waits_in_its_queue() -> bool:  # delivered to the worker, held unacked
            async with httpx.AsyncClient(auth=MANAGEMENT_AUTH) as api:
                response = await api.get(
                    f"{MANAGEMENT}/api/queues/{spread.settings.namespace}/{queue}"
                )
            depth = response.json()
            return (
                depth.get("messages") == len(held) and depth.get("messages_unacknowledged", 0) > 0
            )

        await eventually(far_waits_in_its_queue, "far's reports wait in its queue")
        dead = {d["message_id"] for d in await dead_letters(spread.settings, "failed")}
        assert not dead & {r.message_id for r in held}, "reports were dead-lettered"

        await asyncio.to_thread(spread.server.script, "up")

        async def far_lands() -> bool:
            return held_ids <= await committed(far_dsn)

        await eventually(far_lands, "far's held reports land once the server is back")
    finally:
        await asyncio.to_thread(spread.server.script, "up")
        stop.set()
        await workers
    assert not held_ids & await committed(near_dsn)


async def test_tenant_delete_and_teardown_leave_nothing_on_either_server(
    fresh_namespace: Callable[..., Settings], second_server: Server
) -> None:
    settings = fresh_namespace()
    namespace = settings.namespace
    try:
        await deployed_with_second(settings, second_server)
        far = (await create_tenant(settings, "far", placement="second")).tenant
        away = (await create_tenant(settings, "away", placement="second")).tenant
        env = Env(settings, far, away)
        await publish(settings, [report("heartbeat", await bound_host(env, far))])
        await drain(settings)  # far gets a login of its own on the second server
        before = await names_on(second_server.admin_dsn, namespace)
        names = Names(namespace)
        assert {names.tenant_database("far"), names.tenant_owner_role("far")} <= before

        deleted = await invoke_cli(["tenant", "delete", "far", "--yes"], settings)
        assert deleted.exit_code == 0, deleted.output
        left = await names_on(second_server.admin_dsn, namespace)
        assert not {n for n in left if "far" in n}, left
        assert names.tenant_database("away") in left

        # Without the second server's superuser DSN teardown cannot finish: it changes nothing.
        partial = await invoke_cli(["teardown", "--admin-dsn", ADMIN_DSN, "--yes"], settings)
        assert partial.exit_code == 2, partial.output
        assert f"second on {second_server.host}:{second_server.port}" in partial.output
        assert await names_on(second_server.admin_dsn, namespace) == left
        assert await admin_fetch(
            "select 1 from pg_database where datname = $1", settings.registry_database
        )

        done = await invoke_cli(
            [
                *("teardown", "--admin-dsn", ADMIN_DSN),
                *("--admin-dsn", second_server.admin_dsn, "--yes"),
            ],
            settings,
        )
        assert done.exit_code == 0, done.output
        assert f"role {namespace}_provisioner on {second_server.host}" in done.output
        assert not await names_on(second_server.admin_dsn, namespace)
        assert not await names_on(ADMIN_DSN, namespace)
    finally:
        await _drop_roles_and_databases(second_server, namespace)


# -- tenant move ---------------------------------------------------------------------------------


class Running:
    """The router and the workers running as services do (not in burst), for a test to act
    around; stopped on exit."""

    def __init__(self, settings: Settings, tenants: set[str]) -> None:
        self.settings, self.tenants = settings, tenants
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Running:
        self.tasks = [
            asyncio.create_task(router_app.run(self.settings, stop=self.stop)),
            asyncio.create_task(
                workers_app.run(self.settings, tenants=self.tenants, stop=self.stop)
            ),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


def ids(reports: list[Any]) -> set[uuid.UUID]:
    return {uuid.UUID(r.message_id) for r in reports}


async def test_a_tenant_moves_while_its_agents_report(spread: Spread) -> None:
    settings = spread.settings
    mover = (await create_tenant(settings, "mover")).tenant
    host = await bound_host(spread.env, mover)
    source_dsn = f"postgresql://postgres@127.0.0.1:5432/{mover.db_name}"
    target_dsn = spread.server.dsn(mover.db_name)
    before = [report("system_info", host), report("packages", host)]
    before += [report("heartbeat", host) for _ in range(30)]
    sent: list[Any] = list(before)
    async with Running(settings, {"mover"}):
        await publish(settings, before)

        async def committed_before() -> bool:
            return ids(before) <= await committed(source_dsn)

        await eventually(committed_before, "mover's first reports commit on its first server")

        moving = asyncio.create_task(
            invoke_cli(["tenant", "move", "mover", "--to", "second", "--keep-source"], settings)
        )
        while not moving.done():  # the agent keeps reporting all through the move
            during = [report("heartbeat", host) for _ in range(5)]
            await publish(settings, during)
            sent += during
            await asyncio.sleep(0.02)
        done = await moving
        assert done.exit_code == 0, done.output
        for step in ("[fencing]", "[copying]", "[verifying]", "[switching]", "[switched]"):
            assert step in done.output, done.output
        assert f"source kept, closed to the tenant's logins: {mover.db_name}" in done.output

        after = [report("heartbeat", host) for _ in range(10)]
        await publish(settings, after)
        sent += after

        async def all_landed() -> bool:
            return ids(sent) <= await committed(target_dsn)

        await eventually(all_landed, "every report lands on the new server")

    on_target, on_source = await committed(target_dsn), await committed(source_dsn)
    assert on_target == ids(sent)  # none lost, none from elsewhere
    assert on_source <= on_target  # what the source had was copied
    assert not on_source & ids(after)  # nothing committed on the old server after the switch
    dead = {d["message_id"] for d in await dead_letters(settings, "failed")}
    dead |= {d["message_id"] for d in await dead_letters(settings, "unrouted")}
    assert not dead & {r.message_id for r in sent}
    listed = await invoke_cli(["tenant", "show", "mover", "--json"], settings)
    shown = json.loads(listed.output)
    assert shown["placement"]["name"] == "second" and shown["move"] is None
    # The kept source is closed to the tenant's logins: nothing can commit there.
    assert not await on(
        ADMIN_DSN,
        "select 1 from pg_database where datname = $1 "
        "and has_database_privilege($2, oid, 'connect')",
        mover.db_name,
        Names(settings.namespace).tenant_owner_role("mover"),
    )


async def test_a_move_is_refused_where_it_cannot_be_done_and_changes_nothing(
    spread: Spread,
) -> None:
    settings = spread.settings
    cases = {
        ("near", "--to", "default"): "already on placement 'default'",
        ("near", "--to", "nowhere"): "unknown placement 'nowhere'",
        ("nobody", "--to", "second"): "no tenant 'nobody'",
        ("near",): "not moving: say where to, with --to",
        ("near", "--abort"): "not moving: nothing to abort",
    }
    going = (await create_tenant(settings, "going")).tenant
    async with registry_connection(settings) as conn:
        await records.set_status(conn, going.id, TenantStatus.DELETING)
        await conn.commit()
    cases[("going", "--to", "second")] = "tenant 'going' is deleting"
    for args, says in cases.items():
        refused = await invoke_cli(["tenant", "move", *args], settings)
        assert refused.exit_code != 0 and says in refused.output, (args, refused.output)
    listed = json.loads((await invoke_cli(["tenant", "list", "--json"], settings)).output)
    assert all(t["move"] is None for t in listed)
    assert {t["slug"]: t["placement"]["name"] for t in listed}["near"] == "default"


async def test_a_move_killed_midway_resumes_or_rolls_back(spread: Spread) -> None:
    settings = spread.settings
    slug = "killed"
    record = (await create_tenant(settings, slug)).tenant
    host = await bound_host(spread.env, record)
    source_dsn = f"postgresql://postgres@127.0.0.1:5432/{record.db_name}"
    first = [report("heartbeat", host) for _ in range(10)]
    await publish(settings, first)
    await drain(settings, {slug})

    async def killed_after_fencing() -> None:
        """`tenant move` SIGKILLed once it said the source is fenced."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "services.cli", "tenant", "move", slug, "--to", "second"),
            env=env_for(settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        while line := await asyncio.wait_for(process.stdout.readline(), DEADLINE_S):
            if line.startswith(b"[fencing]"):
                break
        process.kill()
        await process.wait()

    await killed_after_fencing()
    shown = json.loads((await invoke_cli(["tenant", "show", slug, "--json"], settings)).output)
    assert shown["move"]["step"] == "fencing" and shown["move"]["to"] == "second"
    listed = await invoke_cli(["tenant", "list"], settings)
    assert "moving to second (fencing)" in listed.output, listed.output
    status = json.loads((await invoke_cli(["status", "--json"], settings)).output)
    assert {t["slug"]: t["moving"] for t in status["tenants"]}[slug] == "to second (fencing)"
    migrated = json.loads((await invoke_cli(["migrate", "--json"], settings)).output)
    skipped = {t["target"]: t["skipped"] for t in migrated["targets"]}
    assert skipped[f"tenant {slug}"].startswith("moving to second (fencing)")
    held = [report("heartbeat", host) for _ in range(10)]
    await publish(settings, held)
    await route(settings)
    # Fenced: not even a worker that ignores the move can commit on the source.
    refused = await invoke_cli(["tenant", "delete", slug, "--yes"], settings)
    assert refused.exit_code != 0 and "is moving" in refused.output

    aborted = await invoke_cli(["tenant", "move", slug, "--abort"], settings)
    assert aborted.exit_code == 0, aborted.output
    await drain(settings, {slug})  # consumed again, on the source
    assert ids(first + held) == await committed(source_dsn)

    await killed_after_fencing()
    resumed = await invoke_cli(["tenant", "move", slug], settings)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the move of killed to second at step fencing" in resumed.output
    again = [report("heartbeat", host) for _ in range(5)]
    await publish(settings, again)
    await drain(settings, {slug})
    assert ids(first + held + again) == await committed(spread.server.dsn(record.db_name))
    assert not await admin_fetch("select 1 from pg_database where datname = $1", record.db_name)
    cannot = await invoke_cli(["tenant", "move", slug, "--abort"], settings)
    assert cannot.exit_code != 0 and "not moving" in cannot.output


# -- backup and restore --------------------------------------------------------------------------


async def _tenant_with_reports(spread: Spread, slug: str) -> tuple[TenantRecord, set[uuid.UUID]]:
    record = (await create_tenant(spread.settings, slug)).tenant
    host = await bound_host(spread.env, record)
    sent = [report("system_info", host), report("packages", host)]
    sent += [report("heartbeat", host) for _ in range(20)]
    await publish(spread.settings, sent)
    await drain(spread.settings, {slug})
    return record, ids(sent)


async def test_a_backup_restores_into_a_new_tenant_on_another_server(
    spread: Spread, tmp_path: Path
) -> None:
    settings = spread.settings
    _, sent = await _tenant_with_reports(spread, "saved")
    out = tmp_path / "saved.backup"
    made = await invoke_cli(["tenant", "backup", "saved", "--out", str(out), "--json"], settings)
    assert made.exit_code == 0, made.output
    manifest = json.loads(made.stdout)
    assert manifest["revision"] == migrator.head_revision("tenant")
    assert manifest["ledger_ids"] == len(sent) and manifest["tenant"] == "saved"

    restored = await invoke_cli(
        ["tenant", "restore", "copy", "--from", str(out), "--placement", "second"], settings
    )
    assert restored.exit_code == 0, restored.output
    copy = Names(settings.namespace).tenant_database("copy")
    assert await committed(spread.server.dsn(copy)) == sent
    shown = json.loads((await invoke_cli(["tenant", "show", "copy", "--json"], settings)).output)
    assert (shown["status"], shown["placement"]["name"]) == ("active", "second")
    plan = await migrate.plan(settings)
    assert {t.label: t.current for t in plan.targets}["tenant copy"] == manifest["revision"]
    # The restored tenant works as any: a host of its own commits there.
    own = uuid.uuid4()
    await bindings.bind(settings, own, "copy", move=False)
    late = report("heartbeat", own)
    await publish(settings, [late])
    await drain(settings, {"copy"})
    assert uuid.UUID(late.message_id) in await committed(spread.server.dsn(copy))


async def test_restore_refuses_what_it_cannot_do_and_changes_nothing(
    spread: Spread, tmp_path: Path
) -> None:
    settings = spread.settings
    record, sent = await _tenant_with_reports(spread, "kept")
    out = tmp_path / "kept.backup"
    assert (
        await invoke_cli(["tenant", "backup", "kept", "--out", str(out)], settings)
    ).exit_code == 0
    again = await invoke_cli(["tenant", "backup", "kept", "--out", str(out)], settings)
    assert again.exit_code != 0 and "exists" in again.output

    source_dsn = f"postgresql://postgres@127.0.0.1:5432/{record.db_name}"
    active = await invoke_cli(["tenant", "restore", "kept", "--from", str(out)], settings)
    assert active.exit_code != 0 and "suspend it first" in active.output, active.output

    assert (await invoke_cli(["tenant", "suspend", "kept"], settings)).exit_code == 0
    has_data = await invoke_cli(["tenant", "restore", "kept", "--from", str(out)], settings)
    assert has_data.exit_code != 0 and "--replace-data-of kept" in has_data.output
    other = await invoke_cli(
        ["tenant", "restore", "kept", "--from", str(out), "--replace-data-of", "other"], settings
    )
    assert other.exit_code != 0 and "does not name the tenant" in other.output
    assert await committed(source_dsn) == sent

    newer = tmp_path / "newer.backup"
    _rewrite_manifest(out, newer, revision="t9999")
    refused = await invoke_cli(["tenant", "restore", "fresh", "--from", str(newer)], settings)
    assert refused.exit_code != 0 and "newer than this siloflow knows" in refused.output
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not a tar")
    refused = await invoke_cli(["tenant", "restore", "fresh", "--from", str(junk)], settings)
    assert refused.exit_code != 0 and "is not a siloflow tenant backup" in refused.output
    listed = json.loads((await invoke_cli(["tenant", "list", "--json"], settings)).output)
    assert "fresh" not in {t["slug"] for t in listed}

    replaced = await invoke_cli(
        ["tenant", "restore", "kept", "--from", str(out), "--replace-data-of", "kept"], settings
    )
    assert replaced.exit_code == 0, replaced.output
    assert "tenant resume kept" in replaced.output
    assert await committed(source_dsn) == sent


def _rewrite_manifest(source: Path, out: Path, **changes: Any) -> None:
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    with tarfile.open(source) as old, tarfile.open(out, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member)
            assert data is not None
            body = data.read()
            if member.name == "manifest.json":
                body = json.dumps({**json.loads(body), **changes}).encode()
                member.size = len(body)
            new.addfile(member, io.BytesIO(body))


async def test_an_older_backup_is_migrated_after_restoring(spread: Spread, tmp_path: Path) -> None:
    settings = spread.settings
    record = (await create_tenant(settings, "old")).tenant
    older = migrator.pending_revisions("tenant", None)[-2]
    url = at_server(provisioner_url(settings), ServerAddress("127.0.0.1", 5432), record.db_name)
    async with one_connection(url, settings) as conn:
        await set_role(conn, Names(settings.namespace).tenant_owner_role("old"))
        await migrator.downgrade(conn, "tenant", older)
        await conn.commit()
    out = tmp_path / "old.backup"
    made = await invoke_cli(["tenant", "backup", "old", "--out", str(out), "--json"], settings)
    assert made.exit_code == 0 and json.loads(made.stdout)["revision"] == older
    restored = await invoke_cli(["tenant", "restore", "newer", "--from", str(out)], settings)
    assert restored.exit_code == 0, restored.output
    head = migrator.head_revision("tenant")
    assert f"migrated {older} -> {head}" in restored.output
    shown = json.loads((await invoke_cli(["tenant", "show", "newer", "--json"], settings)).output)
    assert shown["schema_revision"] == head


# -- placements as an operator sees them ----------------------------------------------------------


async def test_placements_listed_chosen_and_drained(
    fresh_namespace: Callable[..., Settings], second_server: Server
) -> None:
    settings = fresh_namespace()
    namespace = settings.namespace
    try:
        await deployed_with_second(settings, second_server)

        async def placed(slug: str) -> str:
            made = await invoke_cli(["tenant", "create", slug, "--json"], settings)
            assert made.exit_code == 0, made.output
            return str(json.loads(made.output)["placement"]["name"])

        # The fewest tenants wins; a tie goes to the first by name.
        assert [await placed(s) for s in ("ta", "tb", "tc")] == ["default", "second", "default"]

        async def listed() -> dict[str, dict[str, Any]]:
            done = await invoke_cli(["placement", "list", "--json"], settings)
            assert done.exit_code == 0, done.output
            return {p["name"]: p for p in json.loads(done.output)}

        views = await listed()
        assert (views["default"]["tenants"], views["second"]["tenants"]) == (["ta", "tc"], ["tb"])
        assert all(v["reachable"] and v["database_bytes"] > 0 for v in views.values())

        drained = await invoke_cli(["placement", "drain", "default", "--json"], settings)
        assert drained.exit_code == 0, drained.output
        assert json.loads(drained.stdout)["moved"] == {"ta": "second", "tc": "second"}
        views = await listed()
        assert views["default"]["tenants"] == [] and views["default"]["draining"]
        assert views["second"]["tenants"] == ["ta", "tb", "tc"]
        assert await placed("td") == "second"  # a draining placement takes no tenant

        await asyncio.to_thread(second_server.script, "down")
        try:
            views = await listed()
            assert not views["second"]["reachable"] and views["default"]["reachable"]
            assert f"{second_server.port}" in views["second"]["error"]
            refused = await invoke_cli(["tenant", "create", "te"], settings)
            assert refused.exit_code != 0 and "no placement can take a tenant" in refused.output
            assert "default: draining" in refused.output
            cancelled = await invoke_cli(["placement", "drain", "default", "--cancel"], settings)
            assert cancelled.exit_code == 0, cancelled.output
            assert await placed("te") == "default"  # the unreachable one is passed over
        finally:
            await asyncio.to_thread(second_server.script, "up")
    finally:
        await _drop_roles_and_databases(second_server, namespace)


async def test_a_move_whose_source_server_goes_down_stops_and_resumes(spread: Spread) -> None:
    settings = spread.settings
    record = (await create_tenant(settings, "back", placement="second")).tenant
    host = await bound_host(spread.env, record)
    first = [report("heartbeat", host) for _ in range(10)]
    await publish(settings, first)
    await drain(settings, {"back"})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "services.cli", "tenant", "move", "back", "--to", "default"),
        env=env_for(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    while line := await asyncio.wait_for(process.stdout.readline(), DEADLINE_S):
        if line.startswith(b"[fencing]"):
            break
    await asyncio.to_thread(spread.server.script, "down")  # the source, mid-move
    try:
        _, said = await asyncio.wait_for(process.communicate(), DEADLINE_S)
        if process.returncode != 0:  # it met the outage (it may have been done copying)
            assert b"stopped at step" in said and b"to resume it" in said, said
        held = [report("heartbeat", host) for _ in range(5)]
        await publish(settings, held)
        await route(settings)
        if process.returncode != 0:
            # Rolling back needs the source, to reopen it: refused, saying which server.
            cannot = await invoke_cli(["tenant", "move", "back", "--abort"], settings)
            assert cannot.exit_code != 0, cannot.output
            assert f"{spread.server.host}:{spread.server.port}" in cannot.output, cannot.output
    finally:
        await asyncio.to_thread(spread.server.script, "up")
    resumed = await invoke_cli(["tenant", "move", "back"], settings)
    assert resumed.exit_code == 0 or "not moving" in resumed.output, resumed.output
    await drain(settings, {"back"})
    on_first = await committed(f"postgresql://postgres@127.0.0.1:5432/{record.db_name}")
    assert on_first == ids(first + held)
