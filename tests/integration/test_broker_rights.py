"""The broker's least privilege, tried as an attacker would on the real RabbitMQ: every broker user
of a bootstrapped deployment (services/core/broker_users.py) is refused what its code never
does (the channel closes with ACCESS_REFUSED, and nothing lands), and still does what it must.
Above all: with the agent URL, nothing reaches a tenant queue except through the router."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aio_pika
import aiormq
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from schemas.register import RegisterAccepted
from services.agent.client import AgentPublisher, build_report
from services.core.broker.topology import QUORUM, TENANT_QUEUE_ARGS
from services.core.broker.users import BrokerRole, amqp_url, management_url
from services.core.names import Names
from services.core.settings import load_settings
from services.core.wire import DIRECT_REPLY_TO
from services.ingest import app as ingest_app
from services.ops import tokens
from services.ops.broker_users import ensure_users, remove_users
from tests.integration.pipeline import Env, bound_host, committed_ids, drain, identity_of
from tests.reports import heartbeat
from tests.support import new_namespace

Action = Callable[[AbstractChannel, Names], Awaitable[object]]


def message() -> aio_pika.Message:
    return aio_pika.Message(b'{"forged": true}', message_id=str(uuid.uuid4()))


async def publish_to(channel: AbstractChannel, exchange: str, key: str) -> None:
    """Publish (confirmed) to an exchange by name: "" is the default one."""
    if exchange == "":
        target = channel.default_exchange
    else:
        target = await channel.get_exchange(exchange, ensure=False)
    await target.publish(message(), routing_key=key)


async def ignore(_message: AbstractIncomingMessage) -> None:
    """A consumer that takes nothing (its channel closes, handing everything back)."""


async def consume(channel: AbstractChannel, queue: str, *, no_ack: bool = False) -> None:
    await (await channel.get_queue(queue, ensure=False)).consume(ignore, no_ack=no_ack)


async def get(channel: AbstractChannel, queue: str) -> None:
    await (await channel.get_queue(queue, ensure=False)).get(fail=False)


async def bind(channel: AbstractChannel, queue: str, exchange: str, key: str) -> None:
    await (await channel.get_queue(queue, ensure=False)).bind(exchange, routing_key=key)


TENANT_QUEUE = "acme"  # the slug every refused publish aims at


def tenant(names: Names) -> str:
    return names.tenant_queue(TENANT_QUEUE)


def to_tenant_via(exchange: str) -> Action:
    """Publish under the tenant queue's name to an exchange: by name, "" for the default one,
    "@agents" for the namespace's agents' exchange."""
    return lambda c, n: publish_to(
        c, n.agents_exchange if exchange == "@agents" else exchange, tenant(n)
    )


def to(exchange: Callable[[Names], str], key: str) -> Action:
    return lambda c, n: publish_to(c, exchange(n), key)


def consuming(queue: Callable[[Names], str], *, no_ack: bool = False) -> Action:
    return lambda c, n: consume(c, queue(n), no_ack=no_ack)


def declaring(queue: Callable[[Names], str], arguments: dict[str, object] = QUORUM) -> Action:
    return lambda c, n: c.declare_queue(queue(n), durable=True, arguments=arguments)


AGENTS: Callable[[Names], str] = lambda n: n.agents_exchange  # noqa: E731
TENANTS: Callable[[Names], str] = lambda n: n.tenants_exchange  # noqa: E731
DEAD: Callable[[Names], str] = lambda n: n.dead_exchange  # noqa: E731
INTAKE: Callable[[Names], str] = lambda n: n.intake_queue  # noqa: E731
MINE: Callable[[Names], str] = lambda n: f"{n.namespace}.mine"  # noqa: E731

# (role, what it tries, how). Each must be refused with ACCESS_REFUSED.
REFUSED: list[tuple[BrokerRole, str, Action]] = [
    # -- the agent: the router's only way around --------------------------------------------------
    (BrokerRole.AGENT, "default exchange -> tenant queue", to_tenant_via("")),
    (BrokerRole.AGENT, "amq.direct -> tenant queue", to_tenant_via("amq.direct")),
    (BrokerRole.AGENT, "amq.topic -> tenant queue", to_tenant_via("amq.topic")),
    (BrokerRole.AGENT, "amq.fanout -> tenant queue", to_tenant_via("amq.fanout")),
    (BrokerRole.AGENT, "tenants' exchange", to(TENANTS, TENANT_QUEUE)),
    (BrokerRole.AGENT, "dead-letter exchange", to(DEAD, "failed")),
    (BrokerRole.AGENT, "default exchange -> intake", lambda c, n: publish_to(c, "", INTAKE(n))),
    (BrokerRole.AGENT, "agents' exchange, key 'foo'", to(AGENTS, "foo")),
    (BrokerRole.AGENT, "agents' exchange, key 'report.'", to(AGENTS, "report.")),
    (BrokerRole.AGENT, "agents' exchange, a tenant queue's name", to_tenant_via("@agents")),
    (BrokerRole.AGENT, "declare a queue", declaring(MINE)),
    (BrokerRole.AGENT, "declare an exchange", lambda c, n: c.declare_exchange(MINE(n))),
    (BrokerRole.AGENT, "bind intake", lambda c, n: bind(c, INTAKE(n), n.agents_exchange, "x")),
    (BrokerRole.AGENT, "consume a tenant queue", consuming(tenant)),
    (BrokerRole.AGENT, "get from a tenant queue", lambda c, n: get(c, tenant(n))),
    (BrokerRole.AGENT, "consume dlq.failed", consuming(lambda n: n.dlq("failed"))),
    (BrokerRole.AGENT, "consume intake", consuming(INTAKE)),
    (BrokerRole.AGENT, "delete a tenant queue", lambda c, n: c.queue_delete(tenant(n))),
    # -- services: each only its own queues and exchanges ----------------------------------------
    (BrokerRole.INGEST, "consume a tenant queue", consuming(tenant)),
    (BrokerRole.INGEST, "consume intake", consuming(INTAKE)),
    (BrokerRole.INGEST, "tenants' exchange", to(TENANTS, TENANT_QUEUE)),
    (BrokerRole.INGEST, "declare a queue", declaring(MINE)),
    (BrokerRole.ROUTER, "consume a tenant queue", consuming(tenant)),
    (BrokerRole.ROUTER, "default exchange -> tenant queue", to_tenant_via("")),
    (BrokerRole.ROUTER, "consume a dead-letter queue", consuming(lambda n: n.dlq("unrouted"))),
    (BrokerRole.ROUTER, "delete a tenant queue", lambda c, n: c.queue_delete(tenant(n))),
    (BrokerRole.WORKERS, "tenants' exchange", to(TENANTS, TENANT_QUEUE)),
    (BrokerRole.WORKERS, "default exchange -> tenant queue", to_tenant_via("")),
    (BrokerRole.WORKERS, "agents' exchange", to(AGENTS, "report.heartbeat")),
    (BrokerRole.WORKERS, "consume intake", consuming(INTAKE)),
    (BrokerRole.WORKERS, "declare a tenant queue", declaring(lambda n: n.tenant_queue("new"))),
    # -- operator commands: what their code needs and no more ------------------------------------
    (BrokerRole.DLQ, "consume a tenant queue", consuming(tenant)),
    (BrokerRole.DLQ, "default exchange -> tenant queue", to_tenant_via("")),
    (BrokerRole.DLQ, "declare a queue", declaring(MINE)),
    (BrokerRole.STATUS, "consume a dead-letter queue", consuming(lambda n: n.dlq("invalid"))),
    (BrokerRole.STATUS, "agents' exchange", to(AGENTS, "report.heartbeat")),
    (BrokerRole.TOPOLOGY, "consume a tenant queue", consuming(tenant)),
    (BrokerRole.TOPOLOGY, "tenants' exchange", to(TENANTS, TENANT_QUEUE)),
    (BrokerRole.TOPOLOGY, "default exchange -> tenant queue", to_tenant_via("")),
    (BrokerRole.TOPOLOGY, "declare outside the namespace", declaring(lambda _n: "elsewhere.q")),
]

# (role, what it must still do, how). Each succeeds.
ALLOWED: list[tuple[BrokerRole, str, Action]] = [
    (BrokerRole.AGENT, "a report to the agents' exchange", to(AGENTS, "report.heartbeat")),
    (BrokerRole.AGENT, "a registration", to(AGENTS, "register")),
    (BrokerRole.AGENT, "its direct reply-to", consuming(lambda _n: DIRECT_REPLY_TO, no_ack=True)),
    (BrokerRole.INGEST, "consume register", consuming(lambda n: n.register_queue)),
    (BrokerRole.ROUTER, "consume intake", consuming(INTAKE)),
    (BrokerRole.ROUTER, "the tenants' exchange", to(TENANTS, "nobody")),
    (BrokerRole.WORKERS, "consume a tenant queue", consuming(tenant)),
    (BrokerRole.WORKERS, "the dead-letter exchange", to(DEAD, "nowhere")),
    (BrokerRole.DLQ, "consume a dead-letter queue", consuming(lambda n: n.dlq("invalid"))),
    (BrokerRole.DLQ, "the agents' exchange", to(AGENTS, "nothing.binds.this")),
    (BrokerRole.TOPOLOGY, "declare a tenant queue", declaring(tenant, TENANT_QUEUE_ARGS)),
]


async def attempt(url: str, names: Names, action: Action) -> None:
    """Run one action on a fresh connection and channel (with publisher confirms, so a refused
    publish is seen as the broker's answer, not lost)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await action(channel, names)
    finally:
        await connection.close()


async def waiting(env: Env, queue: str) -> int:
    """Messages in a queue, asked of the queue itself (not the management API's sampled stats)."""
    connection = await aio_pika.connect(env.settings.amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


def label(case: tuple[BrokerRole, str, Action]) -> str:
    return f"{case[0].value}: {case[1]}"


@pytest.mark.parametrize("case", REFUSED, ids=label)
async def test_refused(env: Env, case: tuple[BrokerRole, str, Action]) -> None:
    role, _what, action = case
    names = Names(env.settings.namespace)
    before = {q: await waiting(env, q) for q in (tenant(names), names.intake_queue)}
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="ACCESS_REFUSED"):
        await attempt(amqp_url(env.settings, role), names, action)
    # The refusal came back for the frame itself, before anything was routed: nothing landed.
    assert {q: await waiting(env, q) for q in before} == before


@pytest.mark.parametrize("case", ALLOWED, ids=label)
async def test_allowed(env: Env, case: tuple[BrokerRole, str, Action]) -> None:
    role, _what, action = case
    await attempt(amqp_url(env.settings, role), Names(env.settings.namespace), action)


async def test_the_status_user_reads_statistics_and_changes_nothing(env: Env) -> None:
    base = management_url(env.settings, BrokerRole.STATUS)
    # A connection each: the management API may close one after a 401, racing a reuse of it
    # ("Server disconnected without sending a response", seen once in CI).
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"{base}/api", timeout=30, limits=fresh) as api:
        listed = await api.get(f"/queues/{env.settings.namespace}")
        assert listed.status_code == 200
        assert Names(env.settings.namespace).intake_queue in {q["name"] for q in listed.json()}
        refused = [
            await api.put(
                f"/policies/{env.settings.namespace}/evil",
                json={"pattern": ".*", "definition": {"max-length": 0}},
            ),
            await api.delete(
                f"/queues/{env.settings.namespace}/{tenant(Names(env.settings.namespace))}"
            ),
            await api.put("/users/evil", json={"password": "x", "tags": "administrator"}),
        ]
    assert [r.status_code for r in refused] == [401, 401, 401]


async def test_an_agent_still_reports_and_registers(env: Env) -> None:
    """With nothing but the agent URL: a signed report reaches its silo, and a host registers."""
    host = await bound_host(env, env.a)
    report = build_report("heartbeat", host, heartbeat(), identity=identity_of(env.settings, host))
    async with AgentPublisher(
        amqp_url(env.settings, BrokerRole.AGENT), env.settings.namespace
    ) as agent:
        await agent.publish(report)
    await drain(env.settings, env.slugs)
    assert uuid.UUID(report.message_id) in set(await committed_ids(env.a.db_name))

    issued = await tokens.issue(env.settings, env.a.slug, ttl=timedelta(hours=1), uses=1, note=None)
    stop = asyncio.Event()
    ingest = asyncio.create_task(ingest_app.run(env.settings, stop=stop))
    try:
        async with AgentPublisher(
            amqp_url(env.settings, BrokerRole.AGENT), env.settings.namespace
        ) as agent:
            answer = await agent.register(
                issued.token, hostname="web-9", fqdn="web-9.example", machine_id="m9"
            )
    finally:
        stop.set()
        await ingest
    assert isinstance(answer, RegisterAccepted)


@pytest.fixture
async def neighbour(env: Env) -> AsyncIterator[Names]:
    """A second namespace's broker users on the same vhost, as two deployments sharing one."""
    settings = load_settings(
        namespace=new_namespace(),
        amqp_url=env.settings.amqp_url,
        management_url=env.settings.management_api,
        state_dir=env.settings.state_dir,
    )
    await ensure_users(settings)
    try:
        yield Names(settings.namespace)
    finally:
        await remove_users(settings)


@pytest.mark.parametrize(
    "role", [BrokerRole.INGEST, BrokerRole.ROUTER, BrokerRole.WORKERS, BrokerRole.DLQ]
)
async def test_a_neighbouring_namespace_reaches_nothing_of_this_one(
    env: Env, neighbour: Names, role: BrokerRole
) -> None:
    """The same role of another namespace, on the same vhost, may touch nothing of this one:
    every right is anchored on its own namespace's names. (Except through the default
    exchange, which ingest must write for direct reply-to: docs/security.md, and why a
    deployment gets a vhost of its own.)"""
    own = Names(env.settings.namespace)
    settings = load_settings(
        namespace=neighbour.namespace,
        amqp_url=env.settings.amqp_url,
        management_url=env.settings.management_api,
        state_dir=env.settings.state_dir,
    )
    url = amqp_url(settings, role)
    for action in (
        lambda c, _n: consume(c, own.tenant_queue(TENANT_QUEUE)),
        lambda c, _n: consume(c, own.intake_queue),
        lambda c, _n: consume(c, own.router_queue),
        lambda c, _n: consume(c, own.dlq("failed")),
        lambda c, _n: publish_to(c, own.tenants_exchange, TENANT_QUEUE),
        lambda c, _n: publish_to(c, own.dead_exchange, "failed"),
        lambda c, _n: publish_to(c, own.agents_exchange, "report.heartbeat"),
    ):
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await attempt(url, neighbour, action)


async def test_residual_an_agent_can_tell_whether_a_tenant_queue_exists(env: Env) -> None:
    """A residual risk kept and documented (docs/security.md): RabbitMQ checks no right for a
    passive queue declare, so the agent user learns whether `<ns>.tenant.<slug>` exists and its
    counts; reading or purging it stays refused. If RabbitMQ ever checks a right here, this
    fails and the row can go."""
    names = Names(env.settings.namespace)
    connection = await aio_pika.connect(amqp_url(env.settings, BrokerRole.AGENT))
    async with connection:
        channel = await connection.channel()
        found = await channel.declare_queue(names.tenant_queue(env.a.slug), passive=True)
        assert found.declaration_result.message_count is not None
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await (await connection.channel()).declare_queue(
                names.tenant_queue("no-such-tenant"), passive=True
            )
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await attempt(
            amqp_url(env.settings, BrokerRole.AGENT),
            names,
            lambda c, _n: consume(c, names.tenant_queue(env.a.slug)),
        )
