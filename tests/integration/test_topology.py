"""The topology on the real broker: the shipped definitions import, a conflicting queue is
reported by name, and the policies dead-letter a poison message after the delivery limit."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest

from services.core.broker.connection import connect
from services.core.errors import TopologyConflict
from services.core.names import Names
from services.core.settings import Settings
from services.ops.topology import declare_tenant_queue, definitions, ensure_topology
from tests.support import MANAGEMENT, MANAGEMENT_AUTH


async def test_the_definitions_document_imports_into_a_broker(
    fresh_namespace: Callable[..., Settings],
) -> None:
    # Nothing bootstrapped (the imported users have no password yet): declared as the
    # administrator the URL names, which a process does only when told so.
    settings = fresh_namespace(broker_identity="url")
    document = definitions(settings, ["acme"])
    names = Names(settings.namespace)
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        response = await api.post("/definitions", json=document)
        assert response.is_success, response.text
        queue = (await api.get(f"/queues/{settings.namespace}/{names.tenant_queue('acme')}")).json()
        assert queue["arguments"] == {"x-queue-type": "quorum", "x-single-active-consumer": True}
        imported = (await api.get(f"/policies/{settings.namespace}")).json()
        assert {p["name"] for p in imported} == {p["name"] for p in document["policies"]}
        agent = names.broker_user("agent")
        rights = (await api.get(f"/permissions/{settings.namespace}/{agent}")).json()
        assert rights["write"] == rf"^({re.escape(names.agents_exchange)})$"
        topics = (await api.get(f"/users/{agent}/topic-permissions")).json()
        assert [t["exchange"] for t in topics] == [names.agents_exchange]
    # Imported users have no password: nobody logs in as them before bootstrap sets one.
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(agent_url_with(settings, ""))
    # What migrate declares agrees with what was imported (no conflict).
    connection = await connect(settings, name="test", role=None)
    try:
        await ensure_topology(settings, connection, ["acme"])
    finally:
        await connection.close()


def agent_url_with(settings: Settings, password: str) -> str:
    host = urlsplit(settings.amqp_url)
    user = Names(settings.namespace).broker_user("agent")
    return f"amqp://{user}:{password}@{host.hostname}:{host.port or 5672}/{settings.namespace}"


async def test_a_queue_declared_otherwise_is_reported_by_name(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace()
    names = Names(settings.namespace)
    connection = await connect(settings, name="test", role=None)
    try:
        channel = await connection.channel()
        await channel.declare_queue(names.register_queue, durable=True)  # a classic queue
        with pytest.raises(
            TopologyConflict, match=rf"queue '{names.register_queue}' already exists"
        ):
            await ensure_topology(settings, connection)
    finally:
        await connection.close()


async def test_a_poison_message_is_dead_lettered_after_the_delivery_limit_queued_as_admin(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace(delivery_limit=2, broker_identity="url")  # as the administrator
    names = Names(settings.namespace)
    connection = await connect(settings, name="test", role=None)
    try:
        await ensure_topology(settings, connection)
        await declare_tenant_queue(connection, names, "acme")
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"poison": true}',
                message_id="poison-1",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=names.tenant_queue("acme"),
        )
        queue = await channel.declare_queue(
            names.tenant_queue("acme"),
            durable=True,
            arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
        )
        # A consumer that crashes on it every time: delivered limit + 1 times, then gone to the
        # dead-letter queue. (The broker applies policies and dead-letters asynchronously, so
        # the consumer keeps failing until the letter shows up.)
        deliveries = 0

        async def crash(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal deliveries
            deliveries += 1
            await message.nack(requeue=True)

        # (basic.get is refused on a single-active-consumer queue: a consumer it is.)
        tag = await queue.consume(crash)
        inspector = await connection.channel()
        dlq = await inspector.declare_queue(names.dlq("failed"), passive=True)
        letter = None
        deadline = asyncio.get_running_loop().time() + 30
        while letter is None:
            assert asyncio.get_running_loop().time() < deadline, "never dead-lettered"
            letter = await dlq.get(fail=False, timeout=5)
            if letter is None:
                await asyncio.sleep(0.05)
        await queue.cancel(tag)
        assert deliveries >= 3  # limit 2: the first delivery plus two redeliveries
        assert letter.message_id == "poison-1"
        assert json.loads(letter.body) == {"poison": True}
        assert (letter.headers or {}).get("x-first-death-reason") in (
            "delivery_limit",
            b"delivery_limit",
        )
        await letter.ack()
    finally:
        await connection.close()
