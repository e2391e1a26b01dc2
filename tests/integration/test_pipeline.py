"""The pipeline end to end on the real broker and database: agents -> intake -> router -> tenant
queues -> workers -> tenant silos, and every dead-letter path, driven in burst mode."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import aio_pika

from services.agent.client import AgentPublisher
from services.agent.simulate import bind_fleet, simulate
from services.core.broker.users import agent_url
from services.core.wire import AGENT_ROUTING_KEYS
from services.ops.fleet import FleetOperator
from services.ops.tenants import create_tenant, set_tenant_status
from tests.integration.pipeline import (
    Env,
    bound_host,
    commits_of,
    committed_ids,
    dead_letters,
    drain,
    fetch,
    publish,
    queue_with_router_rights,
    sign_raw,
)
from tests.reports import DEBIAN_PACKAGES, compliance, packages, report
from tests.support import invoke_cli


async def test_every_kind_lands_in_its_own_tenant_only(env: Env) -> None:
    a1, a2 = await bound_host(env, env.a), await bound_host(env, env.a)
    b1 = await bound_host(env, env.b)
    kinds = ("heartbeat", "system_info", "hardware", "packages", "compliance")
    sent = {host: [report(kind, host) for kind in kinds] for host in (a1, a2, b1)}
    await publish(env.settings, [r for reports in sent.values() for r in reports])
    await drain(env.settings, env.slugs)

    in_a = set(await committed_ids(env.a.db_name))
    in_b = set(await committed_ids(env.b.db_name))
    ids = {host: {uuid.UUID(r.message_id) for r in reports} for host, reports in sent.items()}
    assert ids[a1] | ids[a2] <= in_a
    assert ids[b1] <= in_b
    assert not (ids[b1] & in_a), "a report of tenant B's host reached tenant A"
    assert not ((ids[a1] | ids[a2]) & in_b), "a report of tenant A's host reached tenant B"

    [row] = await fetch(env.a.db_name, "select * from hosts where id = $1", a1)
    assert (row["hostname"], row["status"], row["arch"]) == ("web-01", "ok", "x86_64")
    assert row["ipv4"] == ["10.0.0.5", "192.0.2.7"] and row["ipv6"] == ["2001:db8::5"]
    assert row["load_15"] == 1.0 and row["last_seen_at"] is not None
    [hw] = await fetch(env.a.db_name, "select * from host_hardware where host_id = $1", a1)
    assert (hw["cpu_cores"], hw["memory_mb"]) == (8, 16384)
    assert json.loads(hw["disks"])[0]["device"] == "/dev/nvme0n1"
    [pkg] = await fetch(
        env.a.db_name, "select count(*) as n from host_packages where host_id = $1", a1
    )
    assert pkg["n"] == len(DEBIAN_PACKAGES["packages"])
    rules = await fetch(
        env.b.db_name, "select rule_id, status from compliance_results where host_id = $1", b1
    )
    assert len(rules) == 10 and sum(r["status"] == "fail" for r in rules) == 2
    assert not await fetch(env.b.db_name, "select 1 from hosts where id = any($1)", [a1, a2])


async def test_unbound_and_suspended_hosts_are_dead_lettered_unrouted(env: Env) -> None:
    stray = uuid.uuid4()
    suspended_tenant = (await create_tenant(env.settings, "initech")).tenant
    host = await bound_host(env, suspended_tenant)
    await set_tenant_status(env.settings, suspended_tenant.slug, "suspended")
    unbound = report("heartbeat", stray)
    held = report("heartbeat", host)
    await publish(env.settings, [unbound, held])
    await drain(env.settings, env.slugs)

    letters = {d["message_id"]: d for d in await dead_letters(env.settings, "unrouted")}
    for outgoing, reason in ((unbound, "no-tenant-binding"), (held, "tenant-suspended")):
        letter = letters[outgoing.message_id]
        headers = letter["headers"]
        assert headers["x-siloflow-reason"] == reason
        assert headers["x-siloflow-stage"] == "router"
        assert headers["x-siloflow-detail"]
        assert datetime.fromisoformat(headers["x-siloflow-dead-at"]) <= datetime.now(UTC)
        assert json.loads(letter["payload"]) == json.loads(outgoing.body)  # the body, unchanged
    assert await committed_ids(suspended_tenant.db_name) == []


def _raw(
    body: bytes,
    *,
    message_id: str | None = "auto",
    host: str | None = "auto",
    type_: str | None = None,
    content_type: str | None = "application/json",
) -> aio_pika.Message:
    headers: dict[str, object] = {}
    if host is not None:
        headers["host_id"] = str(uuid.uuid4()) if host == "auto" else host
    return aio_pika.Message(
        body,
        message_id=str(uuid.uuid4()) if message_id == "auto" else message_id,
        headers={**headers, "x-test-case": "set below"},
        type=type_,
        content_type=content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def test_malformed_reports_are_dead_lettered_invalid_with_their_reason(env: Env) -> None:
    host = await bound_host(env, env.a)
    good = report("heartbeat", host)
    body = json.loads(good.body)

    def variant(**changes: object) -> bytes:
        return json.dumps({**body, **changes}).encode()

    now = datetime.now(UTC)
    cases: dict[str, tuple[str, aio_pika.Message, str]] = {
        "not-json": ("report.heartbeat", _raw(b"{not json", host=str(host)), "not-json"),
        "not-utf8": ("report.heartbeat", _raw(b"\xff\xfe{}", host=str(host)), "not-utf8"),
        "too-large": (
            "report.packages",
            _raw(b"x" * (env.settings.max_report_bytes + 1), host=str(host)),
            "too-large",
        ),
        "unknown-kind": ("report.telemetry", _raw(good.body, host=str(host)), "unknown-kind"),
        "unmatched-key": ("metrics.cpu", _raw(good.body, host=str(host)), "unknown-routing-key"),
        "extra-field": (
            "report.heartbeat",
            _raw(variant(data={**body["data"], "extra": 1}), host=str(host)),
            "schema-violation",
        ),
        "wrong-type": (
            "report.heartbeat",
            _raw(variant(data={**body["data"], "uptime_s": "long"}), host=str(host)),
            "schema-violation",
        ),
        "nul-byte": (
            "report.heartbeat",
            _raw(variant(data={**body["data"], "agent_version": "1\u00002"}), host=str(host)),
            "schema-violation",
        ),
        # (A missing message_id cannot be sent from here: aiormq fills one in. The unit tests
        # of ingest's handlers cover it.)
        "bad-message-id": (
            "report.heartbeat",
            _raw(good.body, message_id="42", host=str(host)),
            "bad-message-id",
        ),
        "no-host-header": ("report.heartbeat", _raw(good.body, host=None), "bad-host-id"),
        "host-mismatch": ("report.heartbeat", _raw(good.body), "host-id-mismatch"),
        "kind-mismatch": (
            "report.heartbeat",
            _raw(good.body, host=str(host), type_="hardware"),
            "kind-mismatch",
        ),
        "content-type": (
            "report.heartbeat",
            _raw(good.body, host=str(host), content_type="text/plain"),
            "bad-content-type",
        ),
        "future": (
            "report.heartbeat",
            _raw(variant(sent_at=(now + timedelta(days=1)).isoformat()), host=str(host)),
            "sent-at-in-future",
        ),
        "ancient": (
            "report.heartbeat",
            _raw(variant(sent_at=(now - timedelta(days=400)).isoformat()), host=str(host)),
            "sent-at-too-old",
        ),
        "naive-time": (
            "report.heartbeat",
            _raw(variant(sent_at="2026-01-01T00:00:00"), host=str(host)),
            "schema-violation",
        ),
    }
    # An agent may not use a routing key outside the protocol at all (test_broker_rights.py);
    # such a message still reaches intake when moved back from a dead-letter queue by hand, as
    # the administrator publishes it here.
    async with (
        AgentPublisher(agent_url(env.settings), env.settings.namespace) as agent,
        AgentPublisher(env.settings.amqp_url, env.settings.namespace) as administrator,
    ):
        for case, (key, message, _) in cases.items():
            assert message.headers is not None
            message.headers["x-test-case"] = case
            if "host_id" in message.headers and message.message_id:
                sign_raw(env.settings, message)  # authentic: only the defect differs
            protocol_key = re.fullmatch(AGENT_ROUTING_KEYS, key) is not None
            await (agent if protocol_key else administrator).publish_raw(key, message)
    await drain(env.settings, env.slugs)

    letters = {
        d["headers"].get("x-test-case"): d for d in await dead_letters(env.settings, "invalid")
    }
    for case, (_, message, reason) in cases.items():
        assert case in letters, f"{case} was not dead-lettered"
        headers = letters[case]["headers"]
        assert headers["x-siloflow-reason"] == reason, (case, headers["x-siloflow-detail"])
        assert headers["x-siloflow-stage"] == "router"
        assert letters[case]["message_id"] == message.message_id
    assert not set(await committed_ids(env.a.db_name)) & {
        uuid.UUID(m.message_id)
        for _, m, _ in cases.values()
        if m.message_id and len(m.message_id) == 36
    }


async def test_a_duplicate_lands_once(env: Env) -> None:
    host = await bound_host(env, env.b)
    once = report("packages", host)
    commits_before = commits_of(env.b.slug)
    await publish(env.settings, [once, once])  # an agent's retry: same message_id
    await drain(env.settings, env.slugs)
    await publish(env.settings, [once])  # and a redelivery long after the commit
    await drain(env.settings, env.slugs)
    # The ledger cannot hold it twice (its key: test_store.py, test_the_ledger_key_refuses_...);
    # what a duplicate could double is what it writes beside the ledger: the host's packages
    # (a snapshot applied twice, or appended instead of replaced) and the commits counted anew.
    assert uuid.UUID(once.message_id) in await committed_ids(env.b.db_name)
    assert commits_of(env.b.slug) - commits_before == 1
    [row] = await fetch(
        env.b.db_name, "select count(*) as n from host_packages where host_id = $1", host
    )
    assert row["n"] == len(DEBIAN_PACKAGES["packages"])


async def test_a_stale_snapshot_never_overwrites_a_newer_one(env: Env) -> None:
    host = await bound_host(env, env.a)
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    newer = report("packages", host, packages(), sent_at=t0 + timedelta(minutes=5))
    older = report("packages", host, packages(count=10), sent_at=t0)
    await publish(env.settings, [newer])
    await drain(env.settings, env.slugs)
    await publish(env.settings, [older])  # arrives late
    await drain(env.settings, env.slugs)
    # ... and within one batch, the older one listed last.
    other = await bound_host(env, env.a)
    await publish(
        env.settings,
        [
            report("packages", other, packages(), sent_at=t0 + timedelta(minutes=5)),
            report("packages", other, packages(count=10), sent_at=t0),
        ],
    )
    await drain(env.settings, env.slugs)
    for h in (host, other):
        [row] = await fetch(
            env.a.db_name, "select count(*) as n from host_packages where host_id = $1", h
        )
        assert row["n"] == len(DEBIAN_PACKAGES["packages"])
    ids = set(await committed_ids(env.a.db_name))
    assert {uuid.UUID(newer.message_id), uuid.UUID(older.message_id)} <= ids  # both recorded


async def test_a_tenant_whose_queue_is_gone_gets_nothing_and_says_why(env: Env) -> None:
    tenant = (await create_tenant(env.settings, "vandelay")).tenant
    host = await bound_host(env, tenant)
    connection = await aio_pika.connect(env.settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(f"{env.settings.namespace}.tenant.{tenant.slug}")
    finally:
        await connection.close()
    lost = report("heartbeat", host)
    await publish(env.settings, [lost])
    await drain(env.settings, env.slugs)
    letters = {d["message_id"]: d for d in await dead_letters(env.settings, "unrouted")}
    assert letters[lost.message_id]["headers"]["x-siloflow-reason"] == "tenant-queue-missing"


async def test_one_bad_report_in_a_batch_is_dead_lettered_alone_queued_with_router_rights(
    env: Env,
) -> None:
    host = await bound_host(env, env.a)
    good = [report("heartbeat", host) for _ in range(5)]
    # Past validation, straight onto the tenant's queue (as a buggy router could): the database
    # refuses the status, so only this report can fail its batch.
    bad_data = compliance()
    bad_data["results"][0]["status"] = "maybe"
    bad = report("compliance", host, bad_data)
    await queue_with_router_rights(
        env.settings, env.a.slug, [r.message() for r in [*good[:2], bad, *good[2:]]]
    )
    await drain(env.settings, env.slugs)
    ids = set(await committed_ids(env.a.db_name))
    assert {uuid.UUID(r.message_id) for r in good} <= ids
    assert uuid.UUID(bad.message_id) not in ids
    [letter] = [
        d for d in await dead_letters(env.settings, "failed") if d["message_id"] == bad.message_id
    ]
    assert letter["headers"]["x-siloflow-reason"] == "commit-rejected"
    assert letter["headers"]["x-siloflow-stage"] == "worker"
    assert "compliance_results_status_known" in letter["headers"]["x-siloflow-detail"]


async def test_host_binding_commands(env: Env) -> None:
    host = uuid.uuid4()
    bound = await invoke_cli(["host", "bind", str(host), "--tenant", env.a.slug], env.settings)
    assert bound.exit_code == 0, bound.output
    refused = await invoke_cli(["host", "bind", str(host), "--tenant", env.b.slug], env.settings)
    assert refused.exit_code == 1 and "--move" in refused.output
    moved = await invoke_cli(
        ["host", "bind", str(host), "--tenant", env.b.slug, "--move"], env.settings
    )
    assert moved.exit_code == 0 and "moved" in moved.output
    listed = await invoke_cli(["host", "list", "--tenant", env.b.slug, "--json"], env.settings)
    assert {"host_id": str(host), "tenant": env.b.slug} in [
        {k: v for k, v in b.items() if k in ("host_id", "tenant")}
        for b in json.loads(listed.output)
    ]
    assert (
        await invoke_cli(["host", "bind", "not-a-uuid", "--tenant", "x"], env.settings)
    ).exit_code == 2
    assert (await invoke_cli(["host", "unbind", str(host)], env.settings)).exit_code == 0
    again = await invoke_cli(["host", "unbind", str(host)], env.settings)
    assert again.exit_code == 2 and "not bound" in again.output


async def test_the_simulated_fleet_lands_exactly_and_its_misbehaviour_is_dead_lettered(
    env: Env,
) -> None:
    fleet = await bind_fleet(env.settings, FleetOperator(env.settings), [env.a.slug, env.b.slug], 5)
    outcome = await simulate(
        env.settings,
        fleet,
        reports=300,
        rate_per_s=None,
        progress=False,
    )
    before = {t.slug: len(await committed_ids(t.db_name)) for t in (env.a, env.b)}
    invalid_before = len(await dead_letters(env.settings, "invalid"))
    await bind_fleet(
        env.settings, FleetOperator(env.settings), [env.a.slug, env.b.slug], 5
    )  # bound again: unchanged
    await drain(env.settings, env.slugs)
    for tenant in (env.a, env.b):
        landed = len(await committed_ids(tenant.db_name)) - before[tenant.slug]
        assert landed == outcome.per_tenant[tenant.slug]
    reasons = Counter(
        d["headers"]["x-siloflow-reason"]
        for d in (await dead_letters(env.settings, "invalid"))[invalid_before:]
    )
    assert reasons == Counter({"bad-signature": 1, "not-json": 1, "schema-violation": 1})
