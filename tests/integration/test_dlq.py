"""Dead-letter tooling on the real broker: listing changes nothing, replay lands a report exactly
once after its cause is fixed, a replay that fails again comes back with its new reason, an
interrupted replay loses and doubles nothing, purge drops only what matches, the console's Move
messages (a shovel) is accepted too, and a letter the queue holds twice is one letter to
operators."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import httpx
from prometheus_client import REGISTRY

from services.agent.client import AgentPublisher
from services.core import dead_letters as dlq
from services.core.broker.users import BrokerRole, agent_url, amqp_url
from services.core.lifespan import ready_count
from services.core.names import Names
from services.ops import bindings as hosts
from services.ops.tenants import create_tenant, delete_tenant
from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.pipeline import (
    Env,
    bound_host,
    committed_ids,
    dead_letters,
    drain,
    publish,
    queue_with_router_rights,
    route,
)
from tests.integration.test_delivery import eventually
from tests.reports import compliance, heartbeat, report
from tests.support import MANAGEMENT, MANAGEMENT_AUTH, env_for, invoke_cli


async def _unrouted(env: Env, count: int) -> tuple[uuid.UUID, list[str]]:
    """`count` reports from a host nobody bound yet, dead-lettered as unrouted."""
    host = uuid.uuid4()
    sent = [report("heartbeat", host) for _ in range(count)]
    await publish(env.settings, sent)
    await drain(env.settings, env.slugs)
    return host, [r.message_id for r in sent]


async def test_listing_twice_shows_the_same_and_changes_nothing(env: Env) -> None:
    host, ids = await _unrouted(env, 3)
    filters = dlq.Filters(queues=("unrouted",), host=str(host))
    first = await dlq.browse(env.settings, filters)
    second = await dlq.browse(env.settings, filters)
    # The router dead-letters concurrently, so the queue's order need not be the publish order;
    # listing must not change it.
    assert [x.message_id for x in first] == [x.message_id for x in second]
    assert sorted(x.message_id for x in first) == sorted(ids)
    assert {x.reason for x in first} == {"no-tenant-binding"}
    assert all(x.stage == "router" and x.kind == "heartbeat" and x.replays == 0 for x in first)
    listed = await invoke_cli(
        ["dlq", "list", "--queue", "unrouted", "--host", str(host), "--json"], env.settings
    )
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.output)
    assert document["counts"] == [{"queue": "unrouted", "reason": "no-tenant-binding", "count": 3}]
    shown = await invoke_cli(["dlq", "show", ids[0], "--json"], env.settings)
    assert json.loads(shown.output)[0]["headers"]["x-siloflow-reason"] == "no-tenant-binding"


async def test_replay_after_a_late_binding_lands_each_report_once(env: Env) -> None:
    host, ids = await _unrouted(env, 4)
    _, other_ids = await _unrouted(env, 1)  # not matching: must stay where it is
    await hosts.bind(env.settings, host, env.a.slug, move=False)
    refused = await invoke_cli(["dlq", "replay", "--host", str(host)], env.settings)
    assert refused.exit_code == 2 and "--yes" in refused.output  # nothing happened
    dry = await invoke_cli(["dlq", "replay", "--host", str(host), "--dry-run"], env.settings)
    # Back through the agents' exchange (validated and routed again), never the default one.
    assert dry.exit_code == 0 and f"{env.settings.namespace}.agents" in dry.output
    replayed = await invoke_cli(["dlq", "replay", "--host", str(host), "--yes"], env.settings)
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 4, skipped" in replayed.output
    await drain(env.settings, env.slugs)
    committed = await committed_ids(env.a.db_name)
    # Each landed; once is the ledger's key (test_store.py, test_the_ledger_key_refuses_...).
    assert {uuid.UUID(i) for i in ids} <= set(committed)
    remaining = {d["message_id"] for d in await dead_letters(env.settings, "unrouted")}
    assert not remaining & set(ids)
    assert set(other_ids) <= remaining


async def test_a_replay_that_fails_again_comes_back_with_its_reason_and_count(env: Env) -> None:
    host, [message_id] = await _unrouted(env, 1)
    summary = await dlq.replay(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    assert summary.done == 1
    await route(env.settings)  # validated and routed again: still nobody's host
    [letter] = await dlq.browse(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    assert letter.message_id == message_id
    assert (letter.reason, letter.replays) == ("no-tenant-binding", 1)
    assert letter.headers["x-siloflow-last-reason"] == "no-tenant-binding"


async def test_an_invalid_report_replays_through_ingest_once_the_limit_is_raised(env: Env) -> None:
    host = uuid.uuid4()
    await hosts.bind(env.settings, host, env.b.slug, move=False)
    big = report("packages", host)
    await publish(env.settings, [big])
    strict = env.settings.model_copy(update={"max_report_bytes": 2048})
    await router_app.run(strict, burst=True)  # a limit too low: the "bug" to fix
    letters = await dlq.browse(env.settings, dlq.Filters(queues=("invalid",), reason="too-large"))
    assert big.message_id in {x.message_id for x in letters}
    await dlq.replay(env.settings, dlq.Filters(queues=("invalid",), reason="too-large"))
    await drain(env.settings, env.slugs)
    assert uuid.UUID(big.message_id) in await committed_ids(env.b.db_name)


async def test_an_interrupted_replay_loses_and_doubles_nothing(env: Env) -> None:
    host, ids = await _unrouted(env, 40)
    await hosts.bind(env.settings, host, env.b.slug, move=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "dlq",
        "replay",
        "--host",
        str(host),
        "--rate",
        "20",
        "--yes",
        env=env_for(env.settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = Names(env.settings.namespace)
    connection = await aio_pika.connect(env.settings.amqp_url)
    try:
        channel = await connection.channel()

        async def some_replayed() -> bool:  # they wait in intake: nothing drains it
            return await ready_count(channel, names.intake_queue) >= 5

        await eventually(some_replayed, "the replay has sent a few letters back")
    finally:
        await connection.close()
    process.send_signal(signal.SIGKILL)
    await process.wait()
    left = await dlq.browse(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    assert 0 < len(left) < len(ids), "the replay was not interrupted midway: nothing tested"
    await dlq.replay(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    await drain(env.settings, env.slugs)
    committed = await committed_ids(env.b.db_name)
    # Each landed; once is the ledger's key (test_store.py, test_the_ledger_key_refuses_...).
    assert {uuid.UUID(i) for i in ids} <= set(committed)


async def test_purge_drops_only_what_matches(env: Env) -> None:
    host, ids = await _unrouted(env, 2)
    _, keep = await _unrouted(env, 1)
    refused = await invoke_cli(["dlq", "purge", "--host", str(host)], env.settings)
    assert refused.exit_code == 2 and "2 letter(s)" in refused.output
    purged = await invoke_cli(["dlq", "purge", "--host", str(host), "--yes"], env.settings)
    assert purged.exit_code == 0 and "purged 2" in purged.output
    remaining = {d["message_id"] for d in await dead_letters(env.settings, "unrouted")}
    assert not remaining & set(ids) and set(keep) <= remaining


async def test_move_messages_with_a_shovel_is_accepted(env: Env) -> None:
    """What the runbook tells an operator to type in the console's Move messages."""
    names = Names(env.settings.namespace)
    host, ids = await _unrouted(env, 2)
    await hosts.bind(env.settings, host, env.a.slug, move=False)
    # An invalid one too: it must come back under its original routing key.
    big_host = uuid.uuid4()
    await hosts.bind(env.settings, big_host, env.a.slug, move=False)
    big = report("packages", big_host)
    await publish(env.settings, [big])
    await router_app.run(env.settings.model_copy(update={"max_report_bytes": 2048}), burst=True)
    # Leave nothing else in the queues the shovels empty.
    for letter in await dlq.browse(env.settings, dlq.Filters(queues=("unrouted", "invalid"))):
        if letter.message_id not in {*ids, big.message_id}:
            await dlq.purge(env.settings, dlq.Filters(queues=(letter.queue,), host=letter.host_id))
    vhost = env.settings.namespace
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        for source, target in (
            (names.dlq("unrouted"), names.intake_queue),
            (names.dlq("invalid"), names.intake_queue),
        ):
            body = {
                "value": {
                    "src-protocol": "amqp091",
                    "src-uri": f"amqp:///{vhost}",
                    "src-queue": source,
                    "dest-protocol": "amqp091",
                    "dest-uri": f"amqp:///{vhost}",
                    "dest-queue": target,
                    "src-delete-after": "queue-length",
                }
            }
            created = await api.put(
                f"/parameters/shovel/{vhost}/move-{uuid.uuid4().hex[:8]}", json=body
            )
            assert created.is_success, created.text
        deadline = time.monotonic() + 30
        while await dlq.browse(env.settings, dlq.Filters(queues=("unrouted", "invalid"))):
            assert time.monotonic() < deadline, "the shovels did not move the letters"
            await asyncio.sleep(0.2)
    await drain(env.settings, env.slugs)
    committed = set(await committed_ids(env.a.db_name))
    assert {uuid.UUID(i) for i in [*ids, big.message_id]} <= committed


async def test_letters_of_a_deleted_tenant_say_so_queued_with_router_rights(env: Env) -> None:
    doomed = (await create_tenant(env.settings, "initrode")).tenant
    host = await bound_host(env, doomed)
    bad_data = compliance()
    bad_data["results"][0]["status"] = "maybe"  # the database refuses it: dlq.failed
    poison = report("compliance", host, bad_data)
    # Straight onto the tenant's queue (validation would refuse the status), as the router
    # puts it there.
    message = poison.message()
    assert message.headers is not None
    message.headers["x-siloflow-tenant"] = doomed.slug
    await queue_with_router_rights(env.settings, doomed.slug, [message])
    await workers_app.run(env.settings, tenants={doomed.slug}, burst=True)
    [before] = await dlq.browse(env.settings, dlq.Filters(queues=("failed",), tenant=doomed.slug))
    assert before.reason == "commit-rejected"
    await delete_tenant(env.settings, doomed.slug)
    [after] = await dlq.browse(env.settings, dlq.Filters(queues=("failed",), tenant=doomed.slug))
    assert (after.message_id, after.reason) == (poison.message_id, "tenant-deleted")
    assert after.headers["x-siloflow-reason"] == "commit-rejected"  # the first cause is kept


async def _copy_of(env: Env, letter: dlq.DeadLetter) -> None:
    """A second copy of a letter, as a router killed between its dead-letter publish being
    confirmed and its ack of the original leaves one (the redelivered original is dead-lettered
    again): published with the router's rights, to the dead-letter exchange."""
    connection = await aio_pika.connect(amqp_url(env.settings, BrokerRole.ROUTER))
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(
            Names(env.settings.namespace).dead_exchange, ensure=False
        )
        await exchange.publish(
            aio_pika.Message(
                letter.body,
                message_id=letter.message_id,
                type=letter.kind,
                headers=letter.headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=letter.queue,
        )
    finally:
        await connection.close()


def routed() -> float:
    """Reports this process's router has put on tenant queues so far."""
    value = REGISTRY.get_sample_value(
        "siloflow_reports_total", {"stage": "router", "outcome": "routed"}
    )
    return value or 0.0


async def test_a_letter_held_twice_is_one_letter_replayed_once(env: Env) -> None:
    host, [message_id] = await _unrouted(env, 1)
    [letter] = await dlq.browse(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    await _copy_of(env, letter)
    [seen] = await dlq.browse(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    assert (seen.message_id, seen.copies) == (message_id, 2)
    listed = await invoke_cli(["dlq", "list", "--host", str(host), "--json"], env.settings)
    document = json.loads(listed.output)
    assert document["counts"] == [{"queue": "unrouted", "reason": "no-tenant-binding", "count": 1}]
    assert [x["copies"] for x in document["letters"]] == [2]

    await hosts.bind(env.settings, host, env.a.slug, move=False)
    replayed = await invoke_cli(["dlq", "replay", "--host", str(host), "--yes"], env.settings)
    assert "replayed 1 (and 1 copies removed)" in replayed.output, replayed.output
    assert not await dlq.browse(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    before = routed()
    await drain(env.settings, env.slugs)
    assert routed() - before == 1  # one copy went back, so one report was routed
    assert uuid.UUID(message_id) in await committed_ids(env.a.db_name)


async def test_purging_a_letter_held_twice_removes_every_copy(env: Env) -> None:
    host, [message_id] = await _unrouted(env, 1)
    [letter] = await dlq.browse(env.settings, dlq.Filters(queues=("unrouted",), host=str(host)))
    await _copy_of(env, letter)
    purged = await invoke_cli(["dlq", "purge", "--host", str(host), "--yes"], env.settings)
    assert "purged 1 (and 1 copies)" in purged.output, purged.output
    left = [
        d for d in await dead_letters(env.settings, "unrouted") if d["message_id"] == message_id
    ]
    assert left == []


async def test_a_forgery_sharing_a_hosts_message_id_is_another_letter_purged_apart(
    env: Env,
) -> None:
    """The attack: with the agent URL and no key, publish a forgery carrying a host's
    message_id (dead-lettered `bad-signature`); the host's own report with that id is
    dead-lettered too (`sent-at-too-old`). Before, the two were listed as one letter with a
    copy, and purging `bad-signature` destroyed the host's letter with the forgery."""
    host = await bound_host(env, env.a)
    message_id = uuid.uuid4()
    own = report(
        "heartbeat", host, sent_at=datetime.now(UTC) - timedelta(days=60), message_id=message_id
    )
    forgery = report("heartbeat", host, message_id=message_id, data={**heartbeat(), "uptime_s": 1})
    await publish(env.settings, [own])  # signed with the host's key: only stale
    async with AgentPublisher(agent_url(env.settings), env.settings.namespace) as attacker:
        forged = forgery.message()
        forged.headers = {**(forged.headers or {}), "signature": "v1:" + "00" * 32}
        await attacker.publish_raw(forgery.routing_key, forged)
    await route(env.settings)

    letters = await dlq.browse(env.settings, dlq.Filters(queues=("invalid",), host=str(host)))
    assert sorted((x.reason, x.copies) for x in letters) == [
        ("bad-signature", 1),
        ("sent-at-too-old", 1),
    ]
    assert {x.message_id for x in letters} == {str(message_id)}
    purged = await invoke_cli(
        ["dlq", "purge", "--reason", "bad-signature", "--host", str(host), "--yes"], env.settings
    )
    assert purged.exit_code == 0, purged.output
    assert "purged 1" in purged.output and "copies" not in purged.output
    [kept] = await dlq.browse(env.settings, dlq.Filters(queues=("invalid",), host=str(host)))
    assert (kept.reason, kept.message_id) == ("sent-at-too-old", str(message_id))
    assert json.loads(kept.body)["data"]["uptime_s"] != 1  # the host's own, not the forgery
