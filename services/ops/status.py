"""`siloflow status`: the deployment at a glance, from the broker's management API (queues) and
the registry and tenant databases (tenants). Works against a remote deployment: it only needs the
settings' URLs."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import func, select, text

from services.core import dead_letters as dlq
from services.core.broker.users import BrokerRole, management_url
from services.core.db import registry_engine
from services.core.domain import TenantStatus
from services.core.names import Names
from services.core.registry import queries as registry
from services.core.registry.models import host_tenant
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.ops.management import Management

_ACTIVITY = """
    select count(*) filter (where committed_at > now() - interval '1 minute') as last_minute,
           max(committed_at) as last_commit,
           (select count(*) from findings where resolved_at is null) as open_findings
    from agent_messages
"""
_CATALOG = "select id, imported_at from shared_catalog_revisions order by id desc limit 1"


@dataclass
class QueueStatus:
    """One queue as `status` shows it."""

    name: str
    role: str  # intake | register | router | tenant | dlq
    messages: int
    ready: int
    unacked: int
    consumers: int
    publish_rate: float
    deliver_rate: float
    oldest_age_s: float | None = None  # dead-letter queues only: read off their letters' dead-at

    @property
    def wait_estimate_s(self) -> float | None:
        """How long the oldest waiting message has yet to wait, at the current drain rate
        (quorum queues do not expose their head message's age; the services export the age of
        what they take as `siloflow_queue_lag_seconds`). None: nothing drains it (dead letters
        wait for an operator, not for a consumer)."""
        if self.role == "dlq":
            return None
        if self.ready == 0:
            return 0.0
        return self.ready / self.deliver_rate if self.deliver_rate > 0 else None

    def as_json(self) -> dict[str, object]:
        """The queue for `status --json`."""
        return {**self.__dict__, "wait_estimate_s": self.wait_estimate_s}


@dataclass
class TenantView:
    """One tenant as `status` shows it."""

    slug: str
    status: TenantStatus
    hosts: int
    reports_last_minute: int | None
    last_commit: datetime | None
    error: str | None = None
    open_findings: int | None = None
    moving: str | None = None  # "to <placement> (<step>)" while a move is under way

    def as_json(self) -> dict[str, object]:
        """The tenant for `status --json`."""
        return {
            **self.__dict__,
            "last_commit": self.last_commit.isoformat() if self.last_commit else None,
        }


@dataclass
class Status:
    """What `status` shows: queues, tenants, dead letters by reason."""

    queues: list[QueueStatus] = field(default_factory=list)
    tenants: list[TenantView] = field(default_factory=list)
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    catalog_revision: int | None = None  # the vulnerability catalog's, None: none imported
    catalog_age_s: float | None = None

    def as_json(self) -> dict[str, object]:
        """The whole status for `status --json`."""
        return {
            "queues": [q.as_json() for q in self.queues],
            "tenants": [t.as_json() for t in self.tenants],
            "dead_letters": self.dead_letters,
            "catalog": {"revision": self.catalog_revision, "age_s": self.catalog_age_s},
        }


async def _catalog(settings: Settings) -> tuple[int | None, float | None]:
    """The catalog revision in force and its age (None: none imported, or not readable)."""
    try:
        conn = await asyncpg.connect(settings.shared_url, timeout=settings.connect_timeout_s)
    except (OSError, asyncpg.PostgresError):
        return None, None
    try:
        row = await conn.fetchrow(_CATALOG)
    except asyncpg.PostgresError:
        return None, None
    finally:
        await conn.close()
    if row is None:
        return None, None
    return row["id"], (datetime.now(UTC) - row["imported_at"]).total_seconds()


def _role(names: Names, queue: str) -> str | None:
    if queue == names.intake_queue:
        return "intake"
    if queue == names.register_queue:
        return "register"
    if queue == names.router_queue:  # the three-hop version's, while the router drains it
        return "legacy"
    if queue.startswith(names.tenant_queue_prefix):
        return "tenant"
    if queue.startswith(f"{names.namespace}.dlq."):
        return "dlq"
    return None


def _rate(queue: dict[str, Any], key: str) -> float:
    return float((queue.get("message_stats") or {}).get(f"{key}_details", {}).get("rate", 0.0))


async def collect(settings: Settings, *, reasons: bool = True) -> Status:
    """Read the status: queues from the management API, tenants from their databases, letters."""
    names = Names(settings.namespace)
    status = Status()
    async with Management(management_url(settings, BrokerRole.STATUS)) as api:
        for queue in sorted(await api.queues(settings.vhost), key=lambda q: q["name"]):
            role = _role(names, queue["name"])
            if role is None:
                continue
            status.queues.append(
                QueueStatus(
                    name=queue["name"],
                    role=role,
                    messages=int(queue.get("messages", 0) or 0),
                    ready=int(queue.get("messages_ready", 0) or 0),
                    unacked=int(queue.get("messages_unacknowledged", 0) or 0),
                    consumers=int(queue.get("consumers", 0) or 0),
                    publish_rate=_rate(queue, "publish"),
                    deliver_rate=_rate(queue, "deliver_get"),
                )
            )
    engine = registry_engine(settings)
    databases = TenantDatabases(settings, RegistryDirectory(engine))
    try:
        async with engine.connect() as conn:
            tenants = await registry.list_tenants(conn)
            counts: dict[Any, int] = dict(
                (
                    await conn.execute(
                        select(host_tenant.c.tenant_id, func.count())
                        .where(host_tenant.c.revoked_at.is_(None))
                        .group_by(host_tenant.c.tenant_id)
                    )
                ).all()
            )

        async def one(tenant: registry.TenantRecord) -> TenantView:
            row = TenantView(tenant.slug, tenant.status, int(counts.get(tenant.id, 0)), None, None)
            if tenant.move is not None:
                row.moving = f"to {tenant.move.target} ({tenant.move.step})"
            if tenant.status != TenantStatus.ACTIVE or tenant.paused:
                return row  # a paused tenant's database is fenced: its queue says the rest
            try:
                async with databases.begin(tenant) as conn:
                    activity = (await conn.execute(text(_ACTIVITY))).one()
                row.reports_last_minute, row.last_commit, row.open_findings = activity
            except Exception as exc:  # one unreachable tenant is reported, not fatal
                row.error = str(exc).splitlines()[0]
            return row

        status.tenants = list(await asyncio.gather(*(one(t) for t in tenants)))
    finally:
        await databases.close()
        await engine.dispose()
    status.catalog_revision, status.catalog_age_s = await _catalog(settings)
    if reasons:
        letters = await dlq.browse(settings, dlq.Filters())
        by_queue: dict[str, Counter[str]] = {}
        oldest: dict[str, datetime] = {}
        for letter in letters:
            by_queue.setdefault(letter.queue, Counter())[letter.reason] += 1
            if letter.dead_at is not None:
                queue_name = names.dlq(letter.queue)
                known = oldest.get(queue_name)
                oldest[queue_name] = min(known, letter.dead_at) if known else letter.dead_at
        status.dead_letters = {q: dict(c) for q, c in by_queue.items()}
        now = datetime.now(UTC)
        for listed in status.queues:
            if listed.name in oldest:
                listed.oldest_age_s = max((now - oldest[listed.name]).total_seconds(), 0.0)
    return status
