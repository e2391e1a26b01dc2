"""Short-lived tenant logins, from both issuers (the built-in broker and a real OpenBao dev
server), against the real PostgreSQL server and broker: rotation under load, isolation, expiry,
revocation on delete, and an OpenBao outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from services.core.db import registry_engine
from services.core.names import Names
from services.core.settings import Settings
from services.core.silo.credentials.issuers import credential_source
from services.core.silo.credentials.seam import TenantLogin
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.ops.tenants import create_tenant, delete_tenant
from services.router import app as router_app
from services.workers import app as workers_app
from tests import openbao
from tests.integration.pipeline import (
    Env,
    bound_host,
    commits_of,
    committed_ids,
    dead_letters,
    deploy_env,
    fetch,
    publish,
)
from tests.reports import report
from tests.support import (
    admin_fetch,
    drop_namespace,
    new_namespace,
    openbao_settings,
    settings_for,
)

# Created by deploy/local/ensure-services.sh, which makes pg_hba.conf demand its members'
# passwords: on a server that trusts loopback, that is what lets a login expire at all.
LOGIN_GROUP = "siloflow_password_login"
TTL_S = 10.0
MAX_TTL_S = 12.0  # OpenBao renews once, then replaces: both paths run within a rotation test

pytestmark = pytest.mark.timeout(240)
# What using a session ended by pg_terminate_backend raises, depending on when asyncpg notices.
SESSION_ENDED = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
)


@pytest.fixture(scope="module", params=["builtin", "openbao"])
async def issuer_env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """A deployment with tenants acme and globex whose logins live ten seconds."""
    rules = await admin_fetch(
        "select 1 from pg_hba_file_rules where $1 = any(user_name)", f"+{LOGIN_GROUP}"
    )
    assert rules, (
        f"pg_hba.conf does not demand passwords of +{LOGIN_GROUP}; run "
        "deploy/local/ensure-services.sh (it adds the lines and reloads)"
    )
    namespace = new_namespace()
    extra: dict[str, Any] = {"credentials": "builtin"}
    if request.param == "openbao":
        extra = openbao_settings(namespace)
    settings = settings_for(
        namespace,
        credential_ttl_s=TTL_S,
        credential_max_ttl_s=MAX_TTL_S,
        credential_login_group=LOGIN_GROUP,
        **extra,
    )
    try:
        yield await deploy_env(settings)
    finally:
        await drop_namespace(namespace)


async def connect_as(login: TenantLogin, database: str) -> asyncpg.Connection:
    url = login.url
    return await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.host,
        port=url.port,
        database=database,
        timeout=5,
    )


async def logins_of(settings: Settings, slug: str) -> list[str]:
    names = Names(settings.namespace)
    rows = await admin_fetch(
        """select r.rolname from pg_roles r join pg_auth_members m on m.member = r.oid
           join pg_roles o on o.oid = m.roleid
           where o.rolname = $1 and starts_with(r.rolname, $2)""",
        names.tenant_owner_role(slug),
        names.login_prefix,
    )
    return [r["rolname"] for r in rows]


async def forward(settings: Settings) -> None:
    """The router drains what was published; the worker under test runs throughout."""
    await router_app.run(settings, burst=True)


async def wait_committed(database: str, expected: set[uuid.UUID], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not expected <= set(await committed_ids(database)):
        assert time.monotonic() < deadline, "reports did not land in time"
        await asyncio.sleep(0.25)


def failures_for(logs: list[dict[str, object]], tenant: str) -> int:
    """Times a worker logged that it could not reach the tenant's database."""
    return sum(
        1
        for e in logs
        if e.get("event") == "worker.database_unavailable" and e.get("tenant") == tenant
    )


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def no_dead_letters(settings: Settings) -> None:
    for which in ("invalid", "unrouted", "failed"):
        assert await dead_letters(settings, which) == [], which


async def test_worker_commits_through_rotations(issuer_env: Env) -> None:
    env, settings = issuer_env, issuer_env.settings
    host = await bound_host(env, env.a)
    stop = asyncio.Event()
    sent: set[uuid.UUID] = set()
    commits_before = commits_of(env.a.slug)
    with capture_logs() as logs:
        worker = asyncio.create_task(workers_app.run(settings, tenants={env.a.slug}, stop=stop))
        try:
            started = time.monotonic()

            def logins_seen() -> int:
                return len({e["login"] for e in logs if e["event"] == "credentials.issued"})

            # Until a first login and three replacements have served (OpenBao renews each once
            # on the way), publishing all along.
            while logins_seen() < 4 and time.monotonic() - started < 6 * TTL_S:
                batch = [report("heartbeat", host) for _ in range(5)]
                await publish(settings, batch)
                sent |= {uuid.UUID(r.message_id) for r in batch}
                await forward(settings)
                await asyncio.sleep(0.5)
            await wait_committed(env.a.db_name, sent, 30)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
    committed = await committed_ids(env.a.db_name)
    assert sent <= set(committed), "a report was lost across a rotation"
    # A batch committed under an old login and again under the new one cannot make a second
    # ledger row (its key: test_store.py, test_the_ledger_key_refuses_...), so this counts what
    # could go wrong instead: a commit counted as new that did not land, or one lost.
    assert commits_of(env.a.slug) - commits_before == len(sent)
    issued = {e["login"] for e in logs if e["event"] == "credentials.issued"}
    assert len(issued) >= 4, f"expected a first login and three rotations, saw {issued}"
    if settings.credentials == "openbao":
        assert any(e["event"] == "credentials.renewed" for e in logs)
    errors = [e for e in logs if e["log_level"] in ("error", "critical")]
    assert errors == []
    await no_dead_letters(settings)
    # The worker revoked its current login when it stopped; no session of any login lingers.
    names = Names(settings.namespace)
    sessions = await admin_fetch(
        "select usename from pg_stat_activity where starts_with(usename, $1)", names.login_prefix
    )
    assert sessions == []


async def test_a_login_reaches_its_own_tenant_only_and_dies_with_revocation(
    issuer_env: Env,
) -> None:
    env, settings = issuer_env, issuer_env.settings
    source = credential_source(settings)
    login = await source.login_for(env.a)
    assert login.username.startswith(Names(settings.namespace).login_prefix)
    own = await connect_as(login, env.a.db_name)
    try:
        await own.execute(f'set role "{login.role}"')
        # Its own tenant's rows, the same as the administrator sees there.
        seen = await own.fetchval("select count(*) from agent_messages")
        assert seen == (await fetch(env.a.db_name, "select count(*) from agent_messages"))[0][0]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connect_as(login, env.b.db_name)  # globex's database: no CONNECT
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connect_as(login, settings.registry_database)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                user=login.username,
                password="not-the-password",
                host=login.url.host,
                database=env.a.db_name,
            )
        await source.close()  # revokes: the login is dropped and its session ended
        assert login.username not in await logins_of(settings, env.a.slug)
        with pytest.raises(SESSION_ENDED):
            await own.fetchval("select 1")
    finally:
        own.terminate()
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        await connect_as(login, env.a.db_name)


async def test_an_expired_login_cannot_connect(issuer_env: Env) -> None:
    env, settings = issuer_env, issuer_env.settings
    source = credential_source(settings)
    try:
        login = await source.login_for(env.a)
        (await connect_as(login, env.a.db_name)).terminate()  # valid now
        await asyncio.sleep(max(login.lease.expires_at - time.time(), 0) + 1.5)
        with pytest.raises(
            (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
        ):
            await connect_as(login, env.a.db_name)
    finally:
        await source.close()


async def test_a_login_revoked_under_a_pool_is_replaced_and_the_work_goes_on(
    issuer_env: Env,
) -> None:
    env, settings = issuer_env, issuer_env.settings
    reg = registry_engine(settings)
    databases = TenantDatabases(settings, RegistryDirectory(reg))
    try:
        async with databases.begin(env.a) as conn:
            first = (await conn.execute(text("select session_user"))).scalar_one()
        # Revoked behind the service's back (an operator, or the issuer): role and sessions gone.
        await admin_fetch(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1", first
        )
        await admin_fetch(f'drop role "{first}"')
        with capture_logs() as logs:
            async with databases.begin(env.a) as conn:
                second = (await conn.execute(text("select session_user"))).scalar_one()
                assert (await conn.execute(text("select current_user"))).scalar_one() == (
                    Names(settings.namespace).tenant_owner_role(env.a.slug)
                )
        assert second != first
        assert [e["login"] for e in logs if e["event"] == "credentials.login_refused"] == [first]
    finally:
        await databases.close()
        await reg.dispose()


async def test_deleting_a_tenant_revokes_its_logins(issuer_env: Env) -> None:
    settings = issuer_env.settings
    record = (await create_tenant(settings, f"gone-{uuid.uuid4().hex[:6]}")).tenant
    source = credential_source(settings)
    login = await source.login_for(record)
    session = await connect_as(login, record.db_name)
    try:
        assert await logins_of(settings, record.slug) == [login.username]
        await delete_tenant(settings, record.slug)
        roles = await admin_fetch("select 1 from pg_roles where rolname = $1", login.username)
        assert roles == []
        with pytest.raises(SESSION_ENDED):
            await session.fetchval("select 1")
    finally:
        session.terminate()
        await source.close()


@pytest.mark.parametrize("issuer_env", ["openbao"], indirect=True)  # builtin has no server to lose
async def test_openbao_outage_holds_reports_then_recovers(issuer_env: Env) -> None:
    env, settings = issuer_env, issuer_env.settings
    server = openbao.dev_server()
    host = await bound_host(env, env.b)
    stop = asyncio.Event()
    with capture_logs() as logs:
        worker = asyncio.create_task(workers_app.run(settings, tenants={env.b.slug}, stop=stop))
        try:
            first = [report("heartbeat", host) for _ in range(3)]
            await publish(settings, first)
            await forward(settings)
            await wait_committed(env.b.db_name, {uuid.UUID(r.message_id) for r in first}, 30)
            server.pause()
            try:
                # Still within the lease: the worker goes on committing with it.
                during = [report("heartbeat", host) for _ in range(3)]
                await publish(settings, during)
                await forward(settings)
                await wait_committed(env.b.db_name, {uuid.UUID(r.message_id) for r in during}, 5)
                # Past the lease's end, nothing can log in: reports wait in the tenant's queue.
                await asyncio.sleep(MAX_TTL_S + 1)
                held = [report("heartbeat", host) for _ in range(3)]
                held_ids = {uuid.UUID(r.message_id) for r in held}
                tried = failures_for(logs, env.b.slug)
                await publish(settings, held)
                await forward(settings)

                async def refused_again() -> bool:  # the held batch met no login, twice
                    return failures_for(logs, env.b.slug) >= tried + 2

                await wait_until(refused_again, 30)
                assert not held_ids & set(await committed_ids(env.b.db_name))
                await no_dead_letters(settings)
            finally:
                server.resume()
            await wait_committed(env.b.db_name, held_ids, 60)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
    assert any(e["event"] == "credentials.renewal_failed" or "no login" in str(e) for e in logs)
    await no_dead_letters(settings)
    # Each report once: every one sent is there, and nothing else (a second commit of one is
    # impossible by the ledger's primary key).
    sent = {uuid.UUID(r.message_id) for r in [*first, *during, *held]}
    assert set(await committed_ids(env.b.db_name)) == sent


async def test_deleting_a_tenant_spares_a_tenant_whose_slug_it_prefixes(issuer_env: Env) -> None:
    """`acme`'s logins are revoked by a prefix: it must not reach `acme-eu`'s (or readers')."""
    settings = issuer_env.settings
    base = f"pre-{uuid.uuid4().hex[:6]}"
    short = (await create_tenant(settings, base)).tenant
    longer = (await create_tenant(settings, f"{base}-eu")).tenant
    writer, reader = credential_source(settings), credential_source(settings, reader=True)
    kept = [await writer.login_for(longer), await reader.login_for(longer)]
    gone = await reader.login_for(short)
    try:
        await delete_tenant(settings, short.slug)
        assert await admin_fetch("select 1 from pg_roles where rolname = $1", gone.username) == []
        for login in kept:
            session = await connect_as(login, longer.db_name)
            try:
                assert await session.fetchval("select 1") == 1
            finally:
                await session.close()
    finally:
        await writer.close()
        await reader.close()
