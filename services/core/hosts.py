"""Operator binding of hosts to tenants (`siloflow host bind|unbind|list`): for tests and for
bringing an existing fleet in. A host belongs to exactly one tenant; moving it is explicit."""

from __future__ import annotations

import uuid

import structlog

from services.core import registry
from services.core.errors import InvalidArgument, Permanent, TenantNotFound
from services.core.settings import Settings
from services.core.tenants import registry_connection

log = structlog.get_logger(__name__)


class HostAlreadyBound(Permanent):
    """Raised when binding a host that belongs to another tenant without `move`."""

    def __init__(self, host_id: uuid.UUID, tenant: str) -> None:
        super().__init__(
            f"host {host_id} is bound to tenant {tenant!r}; add --move to move it (its reports "
            "go to the new tenant from then on; what is stored stays where it is)"
        )
        self.host_id = host_id
        self.tenant = tenant


async def bind(settings: Settings, host_id: uuid.UUID, slug: str, *, move: bool) -> str:
    """Bind (or with `move`, re-bind) a host; returns what happened: bound, moved, unchanged."""
    async with registry_connection(settings) as conn:
        tenant = await registry.get_tenant(conn, slug)
        if tenant is None:
            raise TenantNotFound(slug)
        if tenant.status == "deleting":
            raise InvalidArgument(f"tenant {slug!r} is being deleted")
        if await registry.bind_host(conn, host_id, tenant.id):
            outcome = "bound"
        else:
            current = await registry.get_binding(conn, host_id)
            assert current is not None  # the insert conflicted on it, in this transaction
            if current.tenant_slug == slug and current.revoked_at is None:
                outcome = "unchanged"
            elif current.tenant_slug != slug and not move:
                raise HostAlreadyBound(host_id, current.tenant_slug)
            else:
                await registry.move_host(conn, host_id, tenant.id)
                outcome = "moved"
        await conn.commit()
    log.info("host.bound", host_id=str(host_id), tenant=slug, outcome=outcome)
    return outcome


async def revoke(settings: Settings, host_id: uuid.UUID) -> None:
    async with registry_connection(settings) as conn:
        if not await registry.revoke_host(conn, host_id):
            binding = await registry.get_binding(conn, host_id)
            if binding is None:
                raise InvalidArgument(f"host {host_id} is not bound to any tenant")
            raise InvalidArgument(f"host {host_id} is revoked already")
        await conn.commit()
    log.warning("host.revoked", host_id=str(host_id))


async def unbind(settings: Settings, host_id: uuid.UUID) -> None:
    async with registry_connection(settings) as conn:
        if not await registry.unbind_host(conn, host_id):
            raise InvalidArgument(f"host {host_id} is not bound to any tenant")
        await conn.commit()
    log.info("host.unbound", host_id=str(host_id))


async def list_hosts(settings: Settings, slug: str | None) -> list[registry.Binding]:
    async with registry_connection(settings) as conn:
        if slug is not None and await registry.get_tenant(conn, slug) is None:
            raise TenantNotFound(slug)
        return await registry.list_bindings(conn, tenant_slug=slug)
