"""Operator binding of hosts to tenants (`siloflow host bind|unbind|list`): for tests and for
bringing an existing fleet in. A host belongs to exactly one tenant; moving it is explicit."""

from __future__ import annotations

import uuid

import structlog

from services.core.domain import TenantStatus
from services.core.errors import HostAlreadyBound, InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.ops import records
from services.ops.tenants import registry_connection

log = structlog.get_logger(__name__)


async def bind(settings: Settings, host_id: uuid.UUID, slug: str, *, move: bool) -> str:
    """Bind (or with `move`, re-bind) a host; returns what happened: bound, moved, unchanged."""
    async with registry_connection(settings) as conn:
        tenant = await registry.get_tenant(conn, slug)
        if tenant is None:
            raise TenantNotFound(slug)
        if tenant.status == TenantStatus.DELETING:
            raise InvalidArgument(f"tenant {slug!r} is being deleted")
        if await records.bind_host(conn, host_id, tenant.id):
            outcome = "bound"
        else:
            current = await records.get_binding(conn, host_id)
            assert current is not None  # the insert conflicted on it, in this transaction
            if current.tenant_slug == slug and current.revoked_at is None:
                outcome = "unchanged"
            elif current.tenant_slug != slug and not move:
                raise HostAlreadyBound(host_id, current.tenant_slug)
            else:
                await records.move_host(conn, host_id, tenant.id)
                outcome = "moved"
        await conn.commit()
    log.info("host.bound", host_id=str(host_id), tenant=slug, outcome=outcome)
    return outcome


async def revoke(settings: Settings, host_id: uuid.UUID) -> None:
    """Revoke a host: its reports are dead-lettered from now on."""
    async with registry_connection(settings) as conn:
        if not await records.revoke_host(conn, host_id):
            binding = await records.get_binding(conn, host_id)
            if binding is None:
                raise InvalidArgument(f"host {host_id} is not bound to any tenant")
            raise InvalidArgument(f"host {host_id} is revoked already")
        await conn.commit()
    log.warning("host.revoked", host_id=str(host_id))


async def unbind(settings: Settings, host_id: uuid.UUID) -> None:
    """Unbind a host: it belongs to no tenant any more."""
    async with registry_connection(settings) as conn:
        if not await records.unbind_host(conn, host_id):
            raise InvalidArgument(f"host {host_id} is not bound to any tenant")
        await conn.commit()
    log.info("host.unbound", host_id=str(host_id))


async def list_hosts(settings: Settings, slug: str | None) -> list[records.Binding]:
    """The host bindings (of one tenant, if given)."""
    async with registry_connection(settings) as conn:
        if slug is not None and await registry.get_tenant(conn, slug) is None:
            raise TenantNotFound(slug)
        return await records.list_bindings(conn, tenant_slug=slug)
