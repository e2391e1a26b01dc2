"""The CLI's side of the audit trail: keep an entry where `core.audit` says (a tenant's silo, as
its owner; or the registry), and read a trail back for `siloflow audit`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.audit import Entry, Recorded, Where, merged, where_kept
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.domain import TenantStatus
from services.core.names import Names
from services.core.pgadmin import set_role
from services.core.registry import audit as registry_audit
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.core.silo import audit as silo_audit
from services.ops.tenants import registry_connection

log = structlog.get_logger(__name__)

# A tenant whose database is being made or unmade has no silo to take an entry.
_HAS_SILO = (TenantStatus.ACTIVE, TenantStatus.SUSPENDED)


async def record(settings: Settings, entry: Entry) -> Where:
    """Keep the entry in its tenant's silo if it has one that takes it, else in the registry
    (saying in the entry's detail why the silo did not take it). Returns where it went."""
    record_ = None
    if entry.tenant is not None:
        async with registry_connection(settings) as conn:
            record_ = await registry.get_tenant(conn, entry.tenant)
    has_silo = record_ is not None and record_.placement is not None and record_.status in _HAS_SILO
    where = where_kept(entry, silo_reachable=has_silo)
    if where is Where.SILO and record_ is not None:
        try:
            async with _silo(settings, record_) as conn:
                await silo_audit.record(conn, entry)
            return Where.SILO
        except Exception as exc:  # the registry takes it, saying why: never lost
            log.warning("audit.silo_refused", tenant=entry.tenant, error=str(exc))
            detail = entry.detail | {"silo_refused": f"{type(exc).__name__}: {exc}"[:500]}
            entry = replace(entry, detail=detail)
    async with registry_connection(settings) as conn:
        await registry_audit.record(conn, entry)
        await conn.commit()
    return Where.REGISTRY


@asynccontextmanager
async def _silo(
    settings: Settings, record_: registry.TenantRecord
) -> AsyncIterator[AsyncConnection]:
    """A connection to the tenant's database as its owner (what the provisioner may become)."""
    assert record_.placement is not None
    server = ServerAddress(record_.placement.host, record_.placement.port)
    url = at_server(provisioner_url(settings), server, record_.db_name)
    async with one_connection(url, settings) as conn:
        await set_role(conn, Names(settings.namespace).tenant_owner_role(record_.slug))
        yield conn


async def trail(settings: Settings, tenant: str | None, *, limit: int) -> list[Recorded]:
    """The newest entries: with a tenant, its silo's and the registry's about it; without, the
    registry's (server-wide acts and tenant acts kept there)."""
    async with registry_connection(settings) as conn:
        kept = await registry_audit.entries(conn, tenant=tenant, limit=limit)
        record_ = None if tenant is None else await registry.get_tenant(conn, tenant)
    if record_ is None or record_.placement is None or record_.status not in _HAS_SILO:
        return kept
    async with _silo(settings, record_) as conn:
        own = await silo_audit.entries(conn, record_.slug, limit=limit)
    return merged(kept, own, limit=limit)
