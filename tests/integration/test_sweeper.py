"""The sweeper on real tenant databases: the right hosts go down in two tenants while a third
tenant's database is unreachable, old messages are pruned, and only one sweeper is active."""

from __future__ import annotations

import uuid

import asyncpg

from services.ops.tenants import create_tenant
from services.sweeper import app as sweeper_app
from services.sweeper.app import lock_key
from tests.integration.pipeline import Env, bound_host, drain, fetch, publish
from tests.integration.test_delivery import admin
from tests.reports import report


async def test_sweep_marks_the_right_hosts_down_despite_an_unreachable_tenant(env: Env) -> None:
    third = (await create_tenant(env.settings, "wayne")).tenant
    silent = {t.slug: await bound_host(env, t) for t in (env.a, env.b, third)}
    lively = {t.slug: await bound_host(env, t) for t in (env.a, env.b)}
    await publish(
        env.settings, [report("heartbeat", h) for h in [*silent.values(), *lively.values()]]
    )
    await drain(env.settings, {env.a.slug, env.b.slug, third.slug})
    for tenant in (env.a, env.b):
        # Silent for an hour: the sweeper's threshold is 5 minutes.
        await fetch(
            tenant.db_name,
            "update hosts set last_seen_at = now() - interval '1 hour', "
            "first_seen_at = now() - interval '1 hour' where id = $1",
            silent[tenant.slug],
        )
        old = uuid.uuid4()
        await fetch(
            tenant.db_name,
            "insert into agent_messages (message_id, host_id, kind, "
            "sent_at, committed_at) values ($1, $2, 'heartbeat', now() - interval "
            "'40 days', now() - interval '40 days')",
            old,
            silent[tenant.slug],
        )
    await admin(f'alter database "{third.db_name}" allow_connections false')
    await admin(
        f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{third.db_name}'"
    )
    try:
        result = await sweeper_app.run(env.settings, burst=True)
    finally:
        await admin(f'alter database "{third.db_name}" allow_connections true')
    assert result is not None
    assert set(result.failed) == {third.slug}
    for tenant in (env.a, env.b):
        rows = {
            r["id"]: r["status"]
            for r in await fetch(tenant.db_name, "select id, status from hosts")
        }
        assert rows[silent[tenant.slug]] == "down"
        assert rows[lively[tenant.slug]] == "ok"
        assert result.pruned[tenant.slug] >= 1
        assert not await fetch(
            tenant.db_name,
            "select 1 from agent_messages where committed_at < now() - interval '31 days'",
        )
    # A host marked down is up again with its next report.
    await publish(env.settings, [report("system_info", silent[env.a.slug])])
    await drain(env.settings, {env.a.slug})
    [row] = await fetch(env.a.db_name, "select status from hosts where id = $1", silent[env.a.slug])
    assert row["status"] == "up"


async def test_only_one_sweeper_is_active(env: Env) -> None:
    holder = await asyncpg.connect(env.settings.registry_url)
    try:
        assert await holder.fetchval(
            "select pg_try_advisory_lock($1)", lock_key(env.settings.namespace)
        )
        assert await sweeper_app.run(env.settings, burst=True) is None  # standby: no pass
    finally:
        await holder.close()
    assert await sweeper_app.run(env.settings, burst=True) is not None
