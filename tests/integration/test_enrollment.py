"""Enrollment and host identity on the real broker and database: tokens, registration over
direct reply-to, signed reports, revocation, and every rejection with the check it proves."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from schemas.register import RegisterAccepted, RegisterRejected
from services.agent.client import AgentPublisher, Identity, build_report
from services.core import wire
from services.core.broker.users import agent_url
from services.core.lifespan import ready_count
from services.core.names import Names
from services.core.registry.models import enrollment_tokens, host_tenant
from services.core.registry.tokens import TOKEN_PREFIX, new_token
from services.ingest import app as ingest_app
from services.ops import bindings as hosts
from services.ops import tokens
from services.ops.tenants import create_tenant, registry_connection, set_tenant_status
from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.pipeline import Env, committed_ids, dead_letters, fetch
from tests.reports import heartbeat, system_info
from tests.support import invoke_cli


@pytest.fixture
async def ingest(env: Env) -> AsyncIterator[None]:
    """Ingest running, to answer registrations."""
    stop = asyncio.Event()
    task = asyncio.create_task(ingest_app.run(env.settings, stop=stop))
    yield
    stop.set()
    await task


async def _register(
    env: Env, token: str, *, message_id: uuid.UUID | None = None, hostname: str = "web-01"
) -> RegisterAccepted | RegisterRejected:
    async with AgentPublisher(agent_url(env.settings), env.settings.namespace) as agent:
        return await agent.register(
            token,
            hostname=hostname,
            fqdn=f"{hostname}.example.net",
            machine_id=uuid.uuid4().hex,
            message_id=message_id,
        )


async def _bindings(env: Env, slug: str) -> int:
    return len(await hosts.list_hosts(env.settings, slug))


async def _send(env: Env, *reports: object) -> None:
    async with AgentPublisher(agent_url(env.settings), env.settings.namespace) as agent:
        for r in reports:
            await agent.publish(r)  # type: ignore[arg-type]


async def _downstream(env: Env) -> None:
    await router_app.run(env.settings, burst=True)
    await workers_app.run(env.settings, tenants=env.slugs, burst=True)


async def test_issue_list_and_revoke_tokens(env: Env) -> None:
    issued = await invoke_cli(
        [
            "token",
            "issue",
            "--tenant",
            env.a.slug,
            "--uses",
            "3",
            "--ttl",
            "2h",
            "--note",
            "rack 12",
            "--json",
        ],
        env.settings,
    )
    assert issued.exit_code == 0, issued.output
    document = json.loads(issued.output)
    token = document["token"]
    assert token.startswith(TOKEN_PREFIX)
    assert len(token) - len(TOKEN_PREFIX) >= 43  # 256 bits in base64url
    listed = await invoke_cli(["token", "list", "--tenant", env.a.slug, "--json"], env.settings)
    assert token not in listed.output and token[len(TOKEN_PREFIX) :] not in listed.output
    [mine] = [t for t in json.loads(listed.output) if t["id"] == document["id"]]
    assert (mine["uses_left"], mine["state"], mine["note"]) == (3, "usable", "rack 12")
    revoked = await invoke_cli(["token", "revoke", document["id"]], env.settings)
    assert revoked.exit_code == 0
    after = await invoke_cli(["token", "list", "--json"], env.settings)
    assert [t["state"] for t in json.loads(after.output) if t["id"] == document["id"]] == [
        "revoked"
    ]
    for bad in (["--ttl", "forever"], ["--uses", "0"], ["--ttl", "400d"]):
        refused = await invoke_cli(["token", "issue", "--tenant", env.a.slug, *bad], env.settings)
        assert refused.exit_code == 2, (bad, refused.output)


async def test_a_registered_agent_reports_into_its_tokens_tenant(env: Env, ingest: None) -> None:
    issued = await tokens.issue(env.settings, env.b.slug, ttl=timedelta(hours=1), uses=1, note=None)
    answer = await _register(env, issued.token, hostname="db-07")
    assert isinstance(answer, RegisterAccepted)
    assert "tenant" not in answer.model_dump() and env.b.slug not in json.dumps(
        answer.model_dump(mode="json")
    )
    identity = Identity.from_answer(answer)
    [row] = await fetch(env.b.db_name, "select hostname from hosts where id = $1", identity.host_id)
    assert row["hostname"] == "db-07"  # the host's row exists from registration on

    good = build_report("system_info", identity.host_id, system_info("db-07"), identity=identity)
    forged = build_report(
        "heartbeat",
        identity.host_id,
        heartbeat(),
        identity=Identity(identity.host_id, b"\x00" * 32, identity.key_version),
    )
    unsigned = build_report("heartbeat", identity.host_id, heartbeat())
    await _send(env, good, forged, unsigned)
    await _downstream(env)

    ids = set(await committed_ids(env.b.db_name))
    assert uuid.UUID(good.message_id) in ids
    assert not {uuid.UUID(forged.message_id), uuid.UUID(unsigned.message_id)} & ids
    assert not {uuid.UUID(forged.message_id), uuid.UUID(unsigned.message_id)} & set(
        await committed_ids(env.a.db_name)
    )
    letters = {d["message_id"]: d["headers"] for d in await dead_letters(env.settings, "invalid")}
    assert letters[forged.message_id]["x-siloflow-reason"] == "bad-signature"
    assert letters[unsigned.message_id]["x-siloflow-reason"] == "bad-signature"


async def test_a_known_host_id_without_its_key_gets_no_row_in(env: Env, ingest: None) -> None:
    victim = uuid.uuid4()
    await hosts.bind(env.settings, victim, env.a.slug, move=False)
    before = await committed_ids(env.a.db_name)
    attacker_key = Identity(victim, uuid.uuid4().bytes * 2, 1)
    attempts = [
        build_report(kind, victim, data, identity=attacker_key)
        for kind, data in (("heartbeat", heartbeat()), ("system_info", system_info()))
    ]
    await _send(env, *attempts)
    await _downstream(env)
    assert await committed_ids(env.a.db_name) == before
    assert not await fetch(env.a.db_name, "select 1 from hosts where id = $1", victim)


async def test_rejections_bind_nothing(env: Env, ingest: None) -> None:
    async def fresh(slug: str = env.a.slug, uses: int = 1) -> tokens.Issued:
        return await tokens.issue(env.settings, slug, ttl=timedelta(hours=1), uses=uses, note=None)

    used = await fresh()
    assert isinstance(await _register(env, used.token), RegisterAccepted)
    expired = await fresh()
    revoked = await fresh()
    await tokens.revoke(env.settings, revoked.info.id)
    async with registry_connection(env.settings) as conn:
        await conn.execute(
            update(enrollment_tokens)
            .where(enrollment_tokens.c.id == expired.info.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await conn.commit()
    suspended_tenant = (await create_tenant(env.settings, "sterling")).tenant
    for_suspended = await fresh(suspended_tenant.slug)
    await set_tenant_status(env.settings, suspended_tenant.slug, "suspended")

    before = {slug: await _bindings(env, slug) for slug in (env.a.slug, suspended_tenant.slug)}
    cases = {
        used.token: "token-exhausted",
        expired.token: "token-expired",
        revoked.token: "token-revoked",
        for_suspended.token: "tenant-suspended",
        new_token(): "token-unknown",
        "": "invalid",
    }
    for token, reason in cases.items():
        answer = await _register(env, token)
        assert isinstance(answer, RegisterRejected), (reason, answer)
        assert answer.reason == reason
    after = {slug: await _bindings(env, slug) for slug in before}
    assert after == before
    async with registry_connection(env.settings) as conn:
        uses = (
            await conn.execute(
                select(enrollment_tokens.c.uses_left).where(
                    enrollment_tokens.c.id == for_suspended.info.id
                )
            )
        ).scalar()
    assert uses == 1  # a rejection spends nothing


async def test_racing_registrations_for_a_single_use_token(env: Env, ingest: None) -> None:
    issued = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=1, note=None)
    before = await _bindings(env, env.a.slug)
    answers = await asyncio.gather(
        *(_register(env, issued.token, hostname=f"racer-{i}") for i in range(12))
    )
    accepted = [a for a in answers if isinstance(a, RegisterAccepted)]
    assert len(accepted) == 1
    assert all(a.reason == "token-exhausted" for a in answers if isinstance(a, RegisterRejected))
    assert await _bindings(env, env.a.slug) == before + 1


async def test_a_lost_reply_retried_gets_the_same_host_and_spends_one_use(
    env: Env, ingest: None
) -> None:
    issued = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=5, note=None)
    message_id = uuid.uuid4()
    first = await _register(env, issued.token, message_id=message_id)
    # The crash this repairs: the registry committed, the tenant's host row did not.
    assert isinstance(first, RegisterAccepted)
    await fetch(env.a.db_name, "delete from hosts where id = $1", first.host_id)
    again = await asyncio.gather(
        *(_register(env, issued.token, message_id=message_id) for _ in range(3))
    )
    assert all(
        isinstance(a, RegisterAccepted)
        and a.host_id == first.host_id
        and a.host_key == first.host_key
        for a in again
    )
    [info] = [
        t for t in await tokens.list_tokens(env.settings, env.a.slug) if t.id == issued.info.id
    ]
    assert info.uses_left == 4
    assert await fetch(env.a.db_name, "select 1 from hosts where id = $1", first.host_id)


async def test_a_retry_with_another_token_gets_no_host_key(env: Env, ingest: None) -> None:
    """An attacker who learnt a registration's message_id replays it with a token of their own
    (a valid one of another tenant, a spent one, garbage): the answer is the one a wrong token
    gets, and nothing of the first registration leaks, in the reply or the logs."""
    issued = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=1, note=None)
    other = await tokens.issue(env.settings, env.b.slug, ttl=timedelta(hours=1), uses=5, note=None)
    message_id = uuid.uuid4()
    first = await _register(env, issued.token, message_id=message_id)
    assert isinstance(first, RegisterAccepted)
    with capture_logs() as logs:
        for token in (other.token, issued.token + "x", "sfe_" + "A" * 43, "x"):
            answer = await _register(env, token, message_id=message_id)
            assert answer == RegisterRejected(reason="token-unknown"), token
    # The rightful agent's retry still gets its answer (the check is not a lock-out) ...
    again = await _register(env, issued.token, message_id=message_id)
    assert isinstance(again, RegisterAccepted) and again.host_key == first.host_key
    # ... and nothing was spent or bound by the attempts, nor is the message_id in a log line.
    [info] = [
        t for t in await tokens.list_tokens(env.settings, env.b.slug) if t.id == other.info.id
    ]
    assert info.uses_left == 5
    assert logs, "the rejections are logged"
    assert not [line for line in logs if str(message_id) in json.dumps(line, default=str)]
    assert not [line for line in logs if first.host_key in json.dumps(line, default=str)]


async def test_the_stored_hash_is_no_token(env: Env, ingest: None) -> None:
    issued = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=1, note=None)
    async with registry_connection(env.settings) as conn:
        stored = (
            await conn.execute(
                select(enrollment_tokens.c.token_hash).where(
                    enrollment_tokens.c.id == issued.info.id
                )
            )
        ).scalar()
    for presented in (
        stored.hex(),
        base64.b64encode(stored).decode(),
        base64.urlsafe_b64encode(stored).decode().rstrip("="),
        TOKEN_PREFIX + stored.hex(),
    ):
        answer = await _register(env, presented)
        assert isinstance(answer, RegisterRejected) and answer.reason == "token-unknown"
    assert isinstance(await _register(env, issued.token), RegisterAccepted)


async def test_a_revoked_host_is_unrouted_within_seconds(env: Env, ingest: None) -> None:
    issued = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=1, note=None)
    answer = await _register(env, issued.token)
    assert isinstance(answer, RegisterAccepted)
    identity = Identity.from_answer(answer)
    stop = asyncio.Event()
    router = asyncio.create_task(router_app.run(env.settings, stop=stop))
    try:
        before = build_report("heartbeat", identity.host_id, heartbeat(), identity=identity)
        await _send(env, before)
        revoked = await invoke_cli(["host", "revoke", str(identity.host_id)], env.settings)
        assert revoked.exit_code == 0, revoked.output
        after = build_report("heartbeat", identity.host_id, heartbeat(), identity=identity)
        await _send(env, after)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            letters = {d["message_id"]: d for d in await dead_letters(env.settings, "unrouted")}
            if after.message_id in letters:
                break
            assert asyncio.get_running_loop().time() < deadline, "revocation not seen"
            await asyncio.sleep(0.1)
        assert letters[after.message_id]["headers"]["x-siloflow-reason"] == "host-revoked"
    finally:
        stop.set()
        await router
    async with registry_connection(env.settings) as conn:
        revoked_at = (
            await conn.execute(
                select(host_tenant.c.revoked_at).where(host_tenant.c.host_id == identity.host_id)
            )
        ).scalar()
    assert revoked_at is not None


async def test_a_source_guessing_tokens_is_slowed_down_and_logged(env: Env, ingest: None) -> None:
    good = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=1, note=None)
    free = env.settings.registration_free_failures

    async def ask(agent: AgentPublisher, token: str) -> RegisterAccepted | RegisterRejected:
        return await agent.register(
            token, hostname="guesser", fqdn="guesser.example.net", machine_id=uuid.uuid4().hex
        )

    with capture_logs() as logs:
        # One connection and channel: one direct reply-to address, so one source.
        async with AgentPublisher(agent_url(env.settings), env.settings.namespace) as guesser:
            for _ in range(free):
                answer = await ask(guesser, new_token())
                assert isinstance(answer, RegisterRejected) and answer.reason == "token-unknown"
            # Past the free failures even a good token is not looked at: the source must wait.
            answer = await ask(guesser, good.token)
            assert isinstance(answer, RegisterRejected), answer
            assert answer.reason == "rate-limited"
            assert answer.retry_after_s is not None and 0 < answer.retry_after_s <= 1.0
    assert any(e["event"] == "registration.source_throttled" for e in logs)
    assert any(e["event"] == "registration.rate_limited" for e in logs)
    # Another source is not held up, and the good token was never spent by the refused try.
    assert isinstance(await _register(env, good.token), RegisterAccepted)


async def test_ingest_answers_no_reply_to_but_the_requesters_own(env: Env) -> None:
    """The attack: with the agent URL, a registration whose reply_to names a tenant queue, a
    dead-letter queue or another deployment's queue on the vhost. The agent user may write
    none of them; before, ingest wrote its answer there for it (through the default exchange).
    Now nothing is published anywhere and no token use is spent."""
    names = Names(env.settings.namespace)
    other = f"{env.settings.namespace}zz.intake"  # another deployment sharing the vhost
    connection = await aio_pika.connect(env.settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(other, auto_delete=True)
        issued = await tokens.issue(
            env.settings, env.a.slug, uses=5, ttl=timedelta(hours=1), note=None
        )
        targets = [names.tenant_queue(env.a.slug), names.dlq("invalid"), other]
        before = {t: await ready_count(channel, t) for t in targets}
        async with AgentPublisher(agent_url(env.settings), env.settings.namespace) as attacker:
            for target in targets:
                request = {
                    "schema": "register/v1",
                    "enrollment_token": issued.token,
                    "hostname": "evil",
                    "fqdn": "evil.example.net",
                    "machine_id": uuid.uuid4().hex,
                    "platform": "linux",
                    "agent_version": "1",
                }
                await attacker.publish_raw(
                    wire.REGISTER_KEY,
                    aio_pika.Message(
                        json.dumps(request).encode(),
                        message_id=str(uuid.uuid4()),
                        reply_to=target,
                        content_type=wire.CONTENT_TYPE,
                    ),
                )
        with capture_logs() as logs:
            await ingest_app.run(env.settings, burst=True)
        after = {t: await ready_count(channel, t) for t in targets}
        assert after == before, "ingest published where the agent asked"
        nowhere = [e for e in logs if e["event"] == "registration.answered_nowhere"]
        assert sorted(e["reply_to"] for e in nowhere) == sorted(targets)
        [listed] = [
            t for t in await tokens.list_tokens(env.settings, env.a.slug) if t.id == issued.info.id
        ]
        assert listed.uses_left == 5  # nothing was registered
    finally:
        await connection.close()


async def test_a_retried_registration_after_its_token_was_revoked_is_refused(
    env: Env, ingest: None
) -> None:
    issued = await tokens.issue(env.settings, env.a.slug, uses=1, ttl=timedelta(hours=1), note=None)
    message_id = uuid.uuid4()
    first = await _register(env, issued.token, message_id=message_id)
    assert isinstance(first, RegisterAccepted)
    again = await _register(env, issued.token, message_id=message_id)  # a lost answer's retry
    assert isinstance(again, RegisterAccepted) and again.host_key == first.host_key
    await tokens.revoke(env.settings, issued.info.id)
    retried = await _register(env, issued.token, message_id=message_id)
    assert retried == RegisterRejected(reason="token-revoked")
