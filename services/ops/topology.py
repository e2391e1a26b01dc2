"""Declaring the broker topology (`siloflow migrate`, `topology apply`, `tenant create` and
`delete`, `teardown`), as the `topology` broker user: exchanges, queues and their bindings, the
policies, the three-hop version's router queue retired once empty, and the topology as a
definitions document for the management console."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType

from services.core.broker.connection import connect
from services.core.broker.topology import (
    ExchangeSpec,
    PolicySpec,
    QueueSpec,
    exchanges,
    legacy_router_inbox,
    missing_queues,
    policies,
    queues,
    tenant_queue,
)
from services.core.broker.users import BrokerRole, management_url
from services.core.errors import TopologyConflict
from services.core.names import Names
from services.core.settings import Settings
from services.ops.broker_users import rights
from services.ops.management import Management

log = structlog.get_logger(__name__)


async def _declare_exchange(channel: AbstractChannel, spec: ExchangeSpec) -> None:
    await channel.declare_exchange(
        spec.name, ExchangeType(spec.type), durable=True, arguments=spec.arguments
    )


async def _declare_queue(channel: AbstractChannel, spec: QueueSpec) -> None:
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    for exchange, key in spec.bindings:
        await queue.bind(exchange, routing_key=key)


async def _declare_all(
    connection: AbstractConnection, items: list[ExchangeSpec | QueueSpec]
) -> None:
    for spec in items:
        # A conflicting declaration closes the channel, so each gets a fresh one to fail on.
        channel = await connection.channel()
        try:
            if isinstance(spec, ExchangeSpec):
                await _declare_exchange(channel, spec)
            else:
                await _declare_queue(channel, spec)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            kind = "exchange" if isinstance(spec, ExchangeSpec) else "queue"
            raise TopologyConflict(
                f"{kind} {spec.name!r} already exists with other arguments than siloflow "
                f"declares ({spec.arguments}); the broker said: {exc}. Another deployment may "
                "use the same namespace, or it was created by hand: move its messages away and "
                "delete it in the management console, or pick another SILOFLOW_NAMESPACE"
            ) from None
        finally:
            if not channel.is_closed:
                await channel.close()


@dataclass(frozen=True)
class Retired:
    """What became of the three-hop version's `<ns>.router` queue."""

    removed: bool  # deleted now
    waiting: int  # reports still in it (then it was kept)
    consumers: int = 0  # consumers on it (then it was kept: they may hold reports unacked)


async def retire_legacy(settings: Settings, connection: AbstractConnection) -> Retired:
    """Delete `<ns>.router` and its policy once the queue is empty and nobody consumes it (a
    consumer may hold reports unacknowledged, which a delete would lose); never a queue with
    reports in it: the router drains it first. (Quorum queues refuse `queue.delete` with
    if-empty, closing the whole connection, so the queue's own counts are read first; nobody
    publishes to it any more, so they cannot change between the two.)"""
    names = Names(settings.namespace)
    queue = legacy_router_inbox(names).name
    removed = False
    if not await missing_queues(connection, [queue]):
        channel = await connection.channel()
        try:
            declared = (await channel.declare_queue(queue, passive=True)).declaration_result
            waiting, consumers = int(declared.message_count or 0), int(declared.consumer_count or 0)
            if waiting or consumers:
                log.warning(
                    "topology.legacy_queue_kept",
                    queue=queue,
                    waiting=waiting,
                    consumers=consumers,
                    hint="the router drains it; run `siloflow topology apply` once it is empty",
                )
                return Retired(removed=False, waiting=waiting, consumers=consumers)
            await channel.queue_delete(queue)
            removed = True
            log.info("topology.legacy_queue_removed", queue=queue)
        finally:
            if not channel.is_closed:
                await channel.close()
    async with Management(management_url(settings, BrokerRole.TOPOLOGY)) as api:
        await api.delete_policy(settings.vhost, names.policy("router"))
    return Retired(removed=removed, waiting=0)


async def declare_base(connection: AbstractConnection, names: Names) -> None:
    """Exchanges, intake, router inbox and dead-letter queues, with their bindings."""
    await _declare_all(connection, [*exchanges(names), *queues(names)])


async def declare_tenant_queue(connection: AbstractConnection, names: Names, slug: str) -> None:
    """Declare a tenant's queue and its binding."""
    await _declare_all(connection, [tenant_queue(names, slug)])


async def delete_tenant_queue(connection: AbstractConnection, names: Names, slug: str) -> None:
    """Delete a tenant's queue (its messages with it)."""
    channel = await connection.channel()
    try:
        await channel.queue_delete(names.tenant_queue(slug))
    finally:
        if not channel.is_closed:
            await channel.close()


async def ensure_policies(settings: Settings, *, overwrite: bool = False) -> list[str]:
    """Create missing policies (existing ones are operators' to tune and are kept unless
    `overwrite`). Returns the names written."""
    names = Names(settings.namespace)
    written = []
    async with Management(management_url(settings, BrokerRole.TOPOLOGY)) as api:
        for spec in policies(names, settings):
            if not overwrite and await api.get_policy(settings.vhost, spec.name) is not None:
                continue
            await api.put_policy(
                settings.vhost,
                spec.name,
                pattern=spec.pattern,
                definition=spec.definition,
                priority=spec.priority,
            )
            written.append(spec.name)
    if written:
        log.info("topology.policies_written", policies=written, vhost=settings.vhost)
    return written


async def ensure_topology(
    settings: Settings, connection: AbstractConnection, tenant_slugs: Sequence[str] = ()
) -> Retired:
    """Everything the services need to exist before they consume or publish: the exchanges, the
    fixed queues, these tenants' queues (their bindings too), the policies; and the three-hop
    version's router queue gone, if it is empty. As `topology`."""
    names = Names(settings.namespace)
    await declare_base(connection, names)
    await _declare_all(connection, [tenant_queue(names, slug) for slug in tenant_slugs])
    await ensure_policies(settings)
    return await retire_legacy(settings, connection)


# -- the operator's copy -------------------------------------------------------------------------


def definitions(settings: Settings, tenant_slugs: Sequence[str] = ()) -> dict[str, Any]:
    """The topology as a management-console definitions document (Overview > Import): the
    exchanges, queues, bindings and policies, and the broker users with their rights."""
    names = Names(settings.namespace)
    vhost = settings.vhost
    doc: dict[str, Any] = {
        "vhosts": [{"name": vhost}],
        "exchanges": [],
        "queues": [],
        "bindings": [],
        "policies": [],
    }
    for ex in exchanges(names):
        doc["exchanges"].append(
            {
                "name": ex.name,
                "vhost": vhost,
                "type": ex.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": ex.arguments,
            }
        )
    for q in [*queues(names), *(tenant_queue(names, s) for s in tenant_slugs)]:
        doc["queues"].append(
            {
                "name": q.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": q.arguments,
            }
        )
        for exchange, key in q.bindings:
            doc["bindings"].append(
                {
                    "source": exchange,
                    "vhost": vhost,
                    "destination": q.name,
                    "destination_type": "queue",
                    "routing_key": key,
                    "arguments": {},
                }
            )
    # The broker users and their rights, without passwords (an empty hash: nobody logs in as
    # them until `siloflow bootstrap`, or `rabbitmqctl change_password`, sets one).
    doc["users"], doc["permissions"], doc["topic_permissions"] = [], [], []
    for role in BrokerRole:
        user = names.broker_user(role.value)
        granted = rights(names, role)
        doc["users"].append(
            {
                "name": user,
                "password_hash": "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": list(granted.tags),
                "limits": {},
            }
        )
        doc["permissions"].append(
            {
                "user": user,
                "vhost": vhost,
                "configure": granted.configure,
                "write": granted.write,
                "read": granted.read,
            }
        )
        doc["topic_permissions"] += [
            {
                "user": user,
                "vhost": vhost,
                "exchange": topic.exchange,
                "write": topic.write,
                "read": topic.read,
            }
            for topic in granted.topics
        ]
    for p in policies(names, settings):
        doc["policies"].append(
            {
                "name": p.name,
                "vhost": vhost,
                "pattern": p.pattern,
                "apply-to": "queues",
                "definition": p.definition,
                "priority": p.priority,
            }
        )
    return doc


async def remove_topology(settings: Settings) -> list[str]:
    """Delete the fixed queues, the exchanges and the policies (tenant queues go with their
    tenants). Messages still queued are lost: this is for tearing a deployment down. Returns
    what it removed: only what was there."""
    names = Names(settings.namespace)
    removed = []
    async with Management(settings.management_api) as api:
        present_queues = {q["name"] for q in await api.queues(settings.vhost)}
        present_exchanges = set(await api.exchanges(settings.vhost))
        doomed_queues = [
            spec.name
            for spec in [*queues(names), legacy_router_inbox(names)]
            if spec.name in present_queues
        ]
        doomed_exchanges = [
            ex.name for ex in reversed(exchanges(names)) if ex.name in present_exchanges
        ]
        if doomed_queues or doomed_exchanges:
            connection = await connect(settings, name="teardown", role=None)
            try:
                channel = await connection.channel()
                for name in doomed_queues:
                    await channel.queue_delete(name)
                    removed.append(f"queue {name}")
                for name in doomed_exchanges:
                    await channel.exchange_delete(name)
                    removed.append(f"exchange {name}")
            finally:
                await connection.close()
        for policy in [*policies(names, settings), PolicySpec(names.policy("router"), "", {})]:
            if await api.delete_policy(settings.vhost, policy.name):
                removed.append(f"policy {policy.name}")
    return removed
