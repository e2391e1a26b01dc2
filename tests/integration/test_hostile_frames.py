"""Frames the client library cannot decode, sent as an attacker would: with the agent URL alone
(`siloflow broker agent-url`) and a raw-frame client, so nothing refuses to encode them. Each is
one dead letter (`undecodable`); the correctly signed reports published right behind them all
commit; the dead-letter tools and `status` list such a letter and never crash on it.

Before this version, one such message closed the router's connection on every delivery until
the broker's delivery limit took it: of 30 good reports behind it, 3 to 24 committed and the rest
went to `dlq.failed` (issue 24)."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core import dead_letters as dlq
from services.core import wire
from services.core.broker.transport import CoalescingRobustConnection
from services.core.broker.users import agent_url
from services.core.names import Names
from services.core.settings import Settings
from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.pipeline import (
    Env,
    bound_host,
    committed_ids,
    dead_letters,
    publish,
)
from tests.integration.test_hostile import purge, through_the_broker
from tests.rawamqp import (
    PROPERTY_FLAGS,
    RawPublisher,
    Refused,
    content_header,
    nested_table,
    properties_payload,
    shortstr,
    table,
)
from tests.reports import report
from tests.support import invoke_cli

BODY = json.dumps({"hostile": True}).encode()
HEARTBEAT = wire.report_routing_key("heartbeat")

# The attacks the issue names, and two more the sanitizer found: a long string that is not UTF-8
# (pamqp decodes it to bytes, which it cannot encode again, so no dead letter could carry it) and
# a double too large for the single-precision float pamqp encodes floats as.
# attack -> (its properties, what the dead letter's detail says of it)
ATTACKS = {
    "timestamp 2**64-1": ({"timestamp": struct.pack(">Q", 2**64 - 1)}, "property timestamp"),
    "message_id not UTF-8": ({"message_id": shortstr(b"\xff\xfe\xfd")}, "property message_id"),
    "headers 3,000 tables deep": ({"headers": nested_table(3000)}, "property headers"),
    "header long string not UTF-8": (
        {"headers": table([(b"host_id", b"S" + struct.pack(">I", 2) + b"\xff\xfe")])},
        "Unknown type",
    ),
    "header double past float": (
        {"headers": table([(b"n", b"d" + struct.pack(">d", 1e300))])},
        "float too large",
    ),
}


async def raw_publish(env: Env, routing_key: str, payload: bytes, body: bytes = BODY) -> bool:
    """Publish as the agent user with a raw content header; whether the broker took it."""
    try:
        async with RawPublisher(agent_url(env.settings)) as raw:
            await raw.publish(
                Names(env.settings.namespace).agents_exchange, routing_key, payload, body
            )
    except Refused:
        return False
    return True


async def good_reports(env: Env, count: int) -> list[uuid.UUID]:
    host = await bound_host(env, env.a)
    sent = [report("heartbeat", host) for _ in range(count)]
    await publish(env.settings, sent)
    return [uuid.UUID(r.message_id) for r in sent]


async def drain(env: Env) -> None:
    await router_app.run(env.settings, burst=True)
    await workers_app.run(env.settings, tenants=env.slugs, burst=True)


async def test_each_attack_is_one_dead_letter_and_the_reports_behind_it_all_commit(
    env: Env,
) -> None:
    names = Names(env.settings.namespace)
    await purge(env, names.dlq("invalid"))
    for name, (properties, _) in ATTACKS.items():
        body = json.dumps({"attack": name}).encode()
        taken = await raw_publish(env, HEARTBEAT, properties_payload(len(body), **properties), body)
        assert taken, f"{name}: the broker is expected to take it (that is the attack)"
    sent = await good_reports(env, 30)

    await drain(env)

    committed = set(await committed_ids(env.a.db_name))
    assert set(sent) <= committed, f"{len(set(sent) - committed)} good reports not committed"
    letters = await dead_letters(env.settings, "invalid")
    undecodable = [x for x in letters if x["headers"].get(wire.REASON) == "undecodable"]
    assert len(undecodable) == len(ATTACKS)
    assert not await dead_letters(env.settings, "failed")  # none by the delivery limit
    detail_of = {json.loads(x["payload"])["attack"]: x["headers"][wire.DETAIL] for x in undecodable}
    for name, (_, says) in ATTACKS.items():
        assert says in detail_of[name], (name, detail_of[name])

    # The dead-letter tools list them, as undecodable with their size, and never crash.
    browsed = await dlq.browse(env.settings, dlq.Filters(queues=("invalid",)))
    seen = [x for x in browsed if x.reason == "undecodable"]
    assert len(seen) == len(ATTACKS)
    assert all(x.undecodable and x.size_bytes > len(BODY) for x in seen)
    listed = await invoke_cli(["dlq", "list", "--json"], env.settings)
    assert listed.exit_code == 0, listed.output
    counts = json.loads(listed.output)["counts"]
    assert {"queue": "invalid", "reason": "undecodable", "count": len(ATTACKS)} in counts
    status = await invoke_cli(["status"], env.settings)
    assert status.exit_code == 0, status.output
    shown = await invoke_cli(["dlq", "show", seen[0].label, "--json"], env.settings)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)[0]["undecodable"]

    # Replay cannot send them anywhere (their properties are gone); purge removes them.
    replayed = await dlq.replay(
        env.settings, dlq.Filters(queues=("invalid",), reason="undecodable")
    )
    assert replayed.done == 0 and replayed.failed == len(ATTACKS)
    purged = await dlq.purge(env.settings, dlq.Filters(queues=("invalid",), reason="undecodable"))
    assert purged.done == len(ATTACKS)
    assert not [
        x
        for x in await dead_letters(env.settings, "invalid")
        if x["headers"].get(wire.REASON) == "undecodable"
    ]


async def test_a_letter_the_broker_dead_lettered_raw_is_listed_as_undecodable(env: Env) -> None:
    """Letters dead-lettered by the broker's delivery limit before this version's reader still
    hold their raw properties: the tools read them as undecodable, never crash."""
    names = Names(env.settings.namespace)
    await purge(env, names.dlq("failed"))
    payload = properties_payload(len(BODY), timestamp=struct.pack(">Q", 2**64 - 1))
    async with RawPublisher(env.settings.amqp_url) as administrator:
        # Where the broker's own dead-lettering puts such a message: dlq.failed.
        await administrator.publish(names.dead_exchange, "failed", payload, BODY)
    listed = await invoke_cli(["dlq", "list", "--json", "--queue", "failed"], env.settings)
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)["letters"]
    assert [(x["reason"], x["undecodable"] is not None) for x in letters] == [("undecodable", True)]
    await purge(env, names.dlq("failed"))


# -- hostile properties, generated ----------------------------------------------------------------

short_bytes = st.binary(max_size=40)
field_values = st.deferred(
    lambda: st.one_of(
        st.tuples(st.just(b"S"), st.binary(max_size=30)).map(
            lambda t: t[0] + struct.pack(">I", len(t[1])) + t[1]
        ),
        st.tuples(st.sampled_from([b"b", b"B"]), st.binary(min_size=1, max_size=1)).map(
            lambda t: t[0] + t[1]
        ),
        st.tuples(st.sampled_from([b"s", b"u"]), st.binary(min_size=2, max_size=2)).map(
            lambda t: t[0] + t[1]
        ),
        st.tuples(st.sampled_from([b"I", b"i", b"f"]), st.binary(min_size=4, max_size=4)).map(
            lambda t: t[0] + t[1]
        ),
        st.tuples(st.sampled_from([b"l", b"d", b"T"]), st.binary(min_size=8, max_size=8)).map(
            lambda t: t[0] + t[1]
        ),
        st.binary(min_size=5, max_size=5).map(lambda b: b"D" + b),
        st.booleans().map(lambda b: b"t" + bytes([b])),
        st.just(b"V"),
        st.binary(max_size=20).map(lambda b: b"x" + struct.pack(">I", len(b)) + b),
        st.integers(min_value=0, max_value=5000).map(lambda d: b"F" + nested_table(d)),
        st.lists(st.tuples(short_bytes, field_values), max_size=3).map(
            lambda pairs: b"F" + table(pairs)
        ),
    )
)
hostile_headers = st.lists(st.tuples(short_bytes, field_values), max_size=6).map(table)
hostile_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": short_bytes.map(shortstr),
        "headers": hostile_headers,
        "delivery_mode": st.sampled_from([b"\x01", b"\x02"]),
        "priority": st.binary(min_size=1, max_size=1),
        "correlation_id": short_bytes.map(shortstr),
        "reply_to": short_bytes.map(shortstr),
        "message_id": short_bytes.map(shortstr),
        "timestamp": st.one_of(
            st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: struct.pack(">Q", n)),
            st.just(struct.pack(">Q", 2**64 - 1)),
        ),
        "message_type": short_bytes.map(shortstr),
        "app_id": short_bytes.map(shortstr),
    },
)


@pytest.mark.timeout(600)
@through_the_broker(6)
@given(batch=st.lists(hostile_properties, min_size=8, max_size=8))
async def test_generated_hostile_properties_never_hold_up_a_good_report(
    env: Env, batch: list[dict[str, bytes]]
) -> None:
    names = Names(env.settings.namespace)
    await purge(env, names.intake_queue, names.dlq("invalid"), names.dlq("unrouted"))
    taken = 0
    tag = uuid.uuid4().hex
    for properties in batch:
        encoded = [(name, value) for name, value in properties.items() if name in PROPERTY_FLAGS]
        body = f'{{"tag": "{tag}"}}'.encode()
        if await raw_publish(env, HEARTBEAT, content_header(len(body), encoded), body):
            taken += 1
    sent = await good_reports(env, 5)

    await drain(env)

    assert set(sent) <= set(await committed_ids(env.a.db_name))
    # Every hostile message the broker took is exactly one dead letter (some are valid enough to
    # be judged on their merits: any reason; none commits, none is lost).
    mine = [
        x
        for which in ("invalid", "unrouted")
        for x in await dead_letters(env.settings, which)
        if tag in str(x["payload"])
    ]
    assert len(mine) == taken
    assert not await dead_letters(env.settings, "failed")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_the_reader_guards_tls_connections_too(
    broker_only: Settings, certificate: tuple[Path, Path]
) -> None:
    """Deployments reach the broker over TLS: the sanitizing reader sits on amqps:// too (a
    TLS-terminating proxy on loopback stands in for a TLS listener)."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    amqp = urlsplit(broker_only.amqp_url)

    async def proxy(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection(amqp.hostname, amqp.port or 5672)
        await asyncio.gather(_pipe(client_r, broker_w), _pipe(broker_r, client_w))

    server = await asyncio.start_server(proxy, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    queue_name = "tls-probe"
    try:
        async with RawPublisher(broker_only.amqp_url) as raw:
            bad = properties_payload(len(BODY), timestamp=struct.pack(">Q", 2**64 - 1))
            good = properties_payload(len(BODY), message_id=shortstr(b"good"))
            plain = await aio_pika.connect(broker_only.amqp_url)
            async with plain:
                channel = await plain.channel()
                await channel.declare_queue(queue_name, auto_delete=False)
            await raw.publish("", queue_name, bad, BODY)
            await raw.publish("", queue_name, good, BODY)
        url = f"amqps://{amqp.username}:{amqp.password}@127.0.0.1:{port}{amqp.path}?cafile={cert}"
        connection = await aio_pika.connect_robust(url, connection_class=CoalescingRobustConnection)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name, passive=True)
            first = await queue.get(timeout=10)
            second = await queue.get(timeout=10)
            await first.ack()
            await second.ack()
            await queue.delete(if_unused=False, if_empty=False)
        assert "property timestamp" in str((first.headers or {})[wire.UNDECODABLE])
        assert second.message_id == "good" and wire.UNDECODABLE not in (second.headers or {})
    finally:
        server.close()
        await server.wait_closed()
