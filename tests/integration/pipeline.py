"""Driving the real pipeline in tests: publish as an agent, then run each service in burst mode
(drain, then exit), in order: the router, then the workers. No sleeps: a burst returns when its
queues are empty."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
from prometheus_client import REGISTRY

from services.agent.client import AgentPublisher, Identity, OutgoingReport
from services.core import wire
from services.core.broker.users import BrokerRole, agent_url, amqp_url
from services.core.hostkeys import load_keyring, sign
from services.core.names import Names
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.ops import bindings as hosts
from services.ops import migrate
from services.ops.bootstrap import bootstrap
from services.ops.tenants import create_tenant
from services.router import app as router_app
from services.workers import app as workers_app
from tests.support import ADMIN_DSN, MANAGEMENT, MANAGEMENT_AUTH, pg_base

PG = pg_base() + "/{db}"


@dataclass
class Env:
    """A deployment with two tenants, for the pipeline tests of one module."""

    settings: Settings
    a: TenantRecord
    b: TenantRecord

    @property
    def slugs(self) -> set[str]:
        return {self.a.slug, self.b.slug}


async def deploy_env(settings: Settings) -> Env:
    """Bootstrap and migrate the deployment, and provision its tenants acme and globex."""
    await bootstrap(settings, ADMIN_DSN)
    await migrate.migrate(settings)
    a = (await create_tenant(settings, "acme")).tenant
    b = (await create_tenant(settings, "globex")).tenant
    return Env(settings, a, b)


async def bound_host(env: Env, tenant: TenantRecord) -> uuid.UUID:
    host = uuid.uuid4()
    await hosts.bind(env.settings, host, tenant.slug, move=False)
    return host


def identity_of(settings: Settings, host: uuid.UUID) -> Identity:
    """A hand-bound host's identity, as `siloflow host bind` prints it."""
    keyring = load_keyring(settings)
    return Identity(host, keyring.host_key(host), keyring.current)


def signed(settings: Settings, report: OutgoingReport) -> OutgoingReport:
    """The report signed by its host (the host_id header names it), unless signed already."""
    if wire.SIGNATURE in report.headers:
        return report
    return report.signed(identity_of(settings, uuid.UUID(report.headers[wire.HOST_ID])))


def sign_raw(settings: Settings, message: aio_pika.Message) -> aio_pika.Message:
    """Sign an arbitrary message as the host its host_id header names would."""
    headers = message.headers or {}
    host = uuid.UUID(str(headers[wire.HOST_ID]))
    keyring = load_keyring(settings)
    headers[wire.SIGNATURE] = sign(
        keyring.host_key(host), keyring.current, message.message_id or "", str(host), message.body
    )
    message.headers = headers
    return message


async def publish(settings: Settings, reports: Iterable[OutgoingReport]) -> None:
    """Publish as the reports' hosts would: signed with their keys."""
    async with AgentPublisher(agent_url(settings), settings.namespace) as agent:
        for r in reports:
            await agent.publish(signed(settings, r))


async def queue_with_router_rights(
    settings: Settings, slug: str, messages: Iterable[aio_pika.Message]
) -> None:
    """Put messages straight onto a tenant's queue, past validation, as the router does: with
    the router's broker user, through the tenants' exchange. Tests of what only a buggy or
    compromised service could send use it, and say so in their names: an agent cannot."""
    connection = await aio_pika.connect(amqp_url(settings, BrokerRole.ROUTER))
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(
            Names(settings.namespace).tenants_exchange, ensure=False
        )
        for message in messages:
            await exchange.publish(message, routing_key=slug)
    finally:
        await connection.close()


async def route(settings: Settings, reports: Iterable[OutgoingReport] = ()) -> None:
    """Publish the reports, then run the router until intake is empty: what was published waits
    in its tenant's queue (or a dead-letter queue)."""
    if sent := list(reports):
        await publish(settings, sent)
    await router_app.run(settings, burst=True)


async def drain(settings: Settings, tenants: set[str] | None = None) -> None:
    """The router, then workers, each until its queues are empty."""
    await route(settings)
    await workers_app.run(settings, tenants=tenants, burst=True)


async def fetch(database: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG.format(db=database))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def committed_ids(database: str) -> list[uuid.UUID]:
    return [r["message_id"] for r in await fetch(database, "select message_id from agent_messages")]


async def dead_letters(settings: Settings, which: str) -> list[dict[str, Any]]:
    """Every message in a dead-letter queue, read without consuming (it is requeued)."""
    queue = Names(settings.namespace).dlq(which)
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        response = await api.post(
            f"/queues/{settings.namespace}/{queue}/get",
            json={"count": 10_000, "ackmode": "ack_requeue_true", "encoding": "auto"},
        )
        response.raise_for_status()
        return [
            {
                "message_id": m["properties"].get("message_id"),
                "headers": m["properties"].get("headers", {}),
                "payload": m["payload"],
            }
            for m in response.json()
        ]


def commits_of(tenant: str) -> float:
    """Reports this process's workers committed anew for the tenant so far."""
    value = REGISTRY.get_sample_value("siloflow_commits_total", {"tenant": tenant})
    return value or 0.0
