"""Upgrading from three hops to two without losing a report: a deployment of the three-hop version
may have validated reports waiting in `<ns>.router` when it is upgraded. The router drains them
(resolving and forwarding, as the old router did) and `topology apply` removes the queue only
once it is empty."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from prometheus_client import REGISTRY

from services.core import wire
from services.core.broker.topology import QUORUM
from services.core.lifespan import ready_count
from services.core.names import Names
from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.pipeline import Env, bound_host, committed_ids, signed
from tests.reports import heartbeat, report
from tests.support import invoke_cli


async def left_by_the_three_hop_version(env: Env, count: int) -> list[str]:
    """`<ns>.router` as the three-hop version declared it, holding `count` reports its ingest
    validated and forwarded (body, signature and properties of the agent's message, plus the
    headers ingest added). Published as the broker administrator: no siloflow user may now."""
    names = Names(env.settings.namespace)
    host = await bound_host(env, env.a)
    connection = await aio_pika.connect(env.settings.amqp_url)
    ids = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(names.router_queue, durable=True, arguments=QUORUM)
        for _ in range(count):
            sent = signed(env.settings, report("heartbeat", host, heartbeat()))
            message = sent.message()
            message.headers = {
                **(message.headers or {}),
                wire.KIND: "heartbeat",
                wire.RECEIVED_AT: int(datetime.now(UTC).timestamp() * 1000),
            }
            await channel.default_exchange.publish(message, routing_key=names.router_queue)
            ids.append(sent.message_id)
    finally:
        await connection.close()
    return ids


def routed() -> float:
    """Reports this process's router has put on tenant queues so far."""
    value = REGISTRY.get_sample_value(
        "siloflow_reports_total", {"stage": "router", "outcome": "routed"}
    )
    return value or 0.0


async def waiting_in_legacy(env: Env) -> int:
    connection = await aio_pika.connect(env.settings.amqp_url)
    try:
        return await ready_count(
            await connection.channel(), Names(env.settings.namespace).router_queue
        )
    finally:
        await connection.close()


async def test_reports_left_in_the_router_queue_are_committed_once_and_the_queue_retired(
    env: Env,
) -> None:
    ids = await left_by_the_three_hop_version(env, 25)
    # While reports wait there, topology apply keeps the queue and says why.
    kept = await invoke_cli(["topology", "apply"], env.settings)
    assert kept.exit_code == 0, kept.output
    assert "kept" in kept.output and "25 reports still wait" in kept.output
    assert await waiting_in_legacy(env) == 25

    routed_before = routed()
    await router_app.run(env.settings, burst=True)  # drains intake and the old queue
    await workers_app.run(env.settings, tenants=env.slugs, burst=True)
    assert {uuid.UUID(i) for i in ids} <= set(await committed_ids(env.a.db_name))
    # Each forwarded once (the ledger's key would hide a double commit; a double forward shows
    # here: the router counts every report it puts on a tenant queue).
    assert routed() - routed_before == len(ids)
    assert await waiting_in_legacy(env) == 0

    removed = await invoke_cli(["topology", "apply"], env.settings)
    assert removed.exit_code == 0, removed.output
    assert f"removed {Names(env.settings.namespace).router_queue}" in removed.output
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await waiting_in_legacy(env)
