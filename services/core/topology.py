"""The broker topology: exchanges, quorum queues and bindings, and the policies that carry what
operators tune. Declared (idempotently) by `siloflow migrate`, `topology apply` and `tenant
create` as the `topology` broker user; the services hold no right to declare anything and only
check, at start-up, that what they consume exists. Queue arguments hold only what cannot change
after declaration (queue type, single active consumer)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue, ExchangeType

from services.core.broker_users import BrokerRole, amqp_url, management_url, rights, user_of
from services.core.errors import SiloflowError, Transient
from services.core.management import Management
from services.core.names import DLQS, Names
from services.core.settings import Settings
from services.core.transport import CoalescingRobustConnection
from services.core.wire import REGISTER_KEY, REPORT_BINDING

log = structlog.get_logger(__name__)

QUORUM = {"x-queue-type": "quorum"}
# One worker at a time owns a tenant: ordering per tenant, and hot standbys when several worker
# processes consume the same queue.
TENANT_QUEUE_ARGS = {**QUORUM, "x-single-active-consumer": True}


class TopologyConflict(SiloflowError):
    """Raised when an exchange or queue already exists with other arguments than siloflow's."""


class TopologyMissing(SiloflowError):
    """Raised when a queue a service consumes does not exist (the topology was never applied,
    or someone deleted it): services do not declare, `siloflow migrate` does."""

    def __init__(self, queues: list[str]) -> None:
        super().__init__(
            f"queue{'s' if len(queues) > 1 else ''} {', '.join(queues)} missing on the broker: "
            "run `siloflow migrate` (or `siloflow topology apply`), which declares them"
        )
        self.queues = queues


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


@dataclass(frozen=True)
class PolicySpec:
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0


def exchanges(names: Names) -> list[ExchangeSpec]:
    return [
        ExchangeSpec(names.unmatched_exchange, "fanout"),
        ExchangeSpec(
            names.agents_exchange, "topic", {"alternate-exchange": names.unmatched_exchange}
        ),
        ExchangeSpec(names.tenants_exchange, "direct"),
        ExchangeSpec(names.dead_exchange, "direct"),
    ]


def intake(names: Names) -> QueueSpec:
    """Every report agents publish, and (through the alternate exchange) every publish that
    matched nothing, so ingest can dead-letter it with a reason."""
    return QueueSpec(
        names.intake_queue,
        QUORUM,
        ((names.agents_exchange, REPORT_BINDING), (names.unmatched_exchange, "")),
    )


def legacy_router_inbox(names: Names) -> QueueSpec:
    """`<ns>.router`, the third hop of siloflow before two hops: validated reports waiting for
    their tenant. Never declared any more; the router drains it while it exists, and `migrate`
    (or `topology apply`) deletes it once it is empty (`retire_legacy`)."""
    return QueueSpec(names.router_queue, QUORUM)


def register_inbox(names: Names) -> QueueSpec:
    return QueueSpec(names.register_queue, QUORUM, ((names.agents_exchange, REGISTER_KEY),))


def queues(names: Names) -> list[QueueSpec]:
    """The queues that exist whatever the tenants: intake, registrations, dead letters."""
    result = [intake(names), register_inbox(names)]
    # Dead-letter queues have no delivery limit and no policy: looking at them never destroys.
    result += [QueueSpec(names.dlq(d), QUORUM, ((names.dead_exchange, d),)) for d in DLQS]
    return result


def tenant_queue(names: Names, slug: str) -> QueueSpec:
    """A tenant's queue, bound to the tenants' exchange by its slug (where the router sends)."""
    return QueueSpec(names.tenant_queue(slug), TENANT_QUEUE_ARGS, ((names.tenants_exchange, slug),))


def policies(names: Names, settings: Settings) -> list[PolicySpec]:
    """Delivery limit and at-least-once dead-lettering for every queue where messages wait to be
    processed; each stage's poison messages land in that stage's dead-letter queue."""
    ns = re.escape(names.namespace)

    def limited(dlq: str) -> dict[str, Any]:
        return {
            "delivery-limit": settings.delivery_limit,
            "dead-letter-exchange": names.dead_exchange,
            "dead-letter-routing-key": dlq,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",  # at-least-once dead-lettering requires it
        }

    return [
        PolicySpec(names.policy("intake"), rf"^{ns}\.intake$", limited("invalid")),
        PolicySpec(names.policy("register"), rf"^{ns}\.register$", limited("invalid")),
        PolicySpec(names.policy("tenants"), rf"^{ns}\.tenant\.", limited("failed")),
    ]


# -- declaring -----------------------------------------------------------------------------------


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


async def missing_queues(connection: AbstractConnection, names: list[str]) -> list[str]:
    """Which of these queues do not exist. Each is asked on a channel of its own: a passive
    declare of a missing queue closes its channel (and must never close a consuming one)."""
    missing = []
    for name in names:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            missing.append(name)
        finally:
            if not channel.is_closed:
                await channel.close()
    return missing


async def consumable(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """The queue, declared passively on the consuming channel itself (it needs no right, and a
    robust channel restores consumers only of queues it declared, after a reconnection). Check
    that it exists first (`missing_queues`): a missing one closes the channel."""
    return await channel.declare_queue(spec.name, passive=True)


async def declare_base(connection: AbstractConnection, names: Names) -> None:
    """Exchanges, intake, router inbox and dead-letter queues, with their bindings."""
    await _declare_all(connection, [*exchanges(names), *queues(names)])


async def declare_tenant_queue(connection: AbstractConnection, names: Names, slug: str) -> None:
    await _declare_all(connection, [tenant_queue(names, slug)])


async def delete_tenant_queue(connection: AbstractConnection, names: Names, slug: str) -> None:
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


# aio-pika waits 5 s between reconnection attempts by default; a restarted broker is usually
# back sooner than that.
RECONNECT_INTERVAL_S = 1.0


class BrokerUnavailable(Transient):
    """Raised when RabbitMQ cannot be reached (or refuses the login) at start-up."""


async def connect(
    settings: Settings, *, name: str, role: BrokerRole | None
) -> aio_pika.abc.AbstractRobustConnection:
    """A robust (self-reconnecting) connection as `role`'s broker user (`None`: the configured
    URL's, the broker administrator of bootstrap and teardown), named for the console."""
    url = amqp_url(settings, role)
    try:
        return await aio_pika.connect_robust(
            url,
            client_properties={"connection_name": f"siloflow {name}"},
            reconnect_interval=RECONNECT_INTERVAL_S,
            # A broker that accepts TCP but never starts the handshake must not hang us.
            timeout=settings.connect_timeout_s,
            connection_class=CoalescingRobustConnection,
        )
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
        parts = urlsplit(url)
        raise BrokerUnavailable(
            f"RabbitMQ at {parts.hostname}:{parts.port or 5672} (vhost {settings.vhost!r}, user "
            f"{user_of(url)!r}) is unreachable: {exc or type(exc).__name__}"
        ) from exc


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
    tenants). Messages still queued are lost: this is for tearing a deployment down."""
    names = Names(settings.namespace)
    removed = []
    connection = await connect(settings, name="teardown", role=None)
    try:
        channel = await connection.channel()
        for spec in [*queues(names), legacy_router_inbox(names)]:
            await channel.queue_delete(spec.name)
            removed.append(f"queue {spec.name}")
        for ex in reversed(exchanges(names)):
            await channel.exchange_delete(ex.name)
            removed.append(f"exchange {ex.name}")
    finally:
        await connection.close()
    async with Management(settings.management_api) as api:
        for policy in [*policies(names, settings), PolicySpec(names.policy("router"), "", {})]:
            await api.delete_policy(settings.vhost, policy.name)
            removed.append(f"policy {policy.name}")
    return removed
