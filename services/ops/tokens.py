"""Enrollment tokens, the operators' side: issued for one tenant, shown once, stored only as a
hash (`services.core.registry.tokens`, where registrations spend them), listed, revoked."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.core.domain import TenantStatus
from services.core.errors import InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.core.registry.tokens import (
    Issued,
    TokenInfo,
    check_issue,
    issue_for,
    revoke_token,
    tokens_of,
)
from services.core.settings import Settings
from services.ops.tenants import registry_connection


async def issue(
    settings: Settings, slug: str, *, ttl: timedelta, uses: int, note: str | None
) -> Issued:
    """Issue a token for a tenant: `uses` registrations, for `ttl`."""
    check_issue(ttl, uses)
    async with registry_connection(settings) as conn:
        tenant = await registry.get_tenant(conn, slug)
        if tenant is None:
            raise TenantNotFound(slug)
        if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            raise InvalidArgument(f"tenant {slug!r} is {tenant.status}")
        issued = await issue_for(conn, tenant.id, ttl=ttl, uses=uses, note=note)
        await conn.commit()
    return issued


async def list_tokens(settings: Settings, slug: str | None) -> list[TokenInfo]:
    """Every token (of one tenant, if given), oldest first."""
    async with registry_connection(settings) as conn:
        tenant_id = None
        if slug is not None:
            tenant = await registry.get_tenant(conn, slug)
            if tenant is None:
                raise TenantNotFound(slug)
            tenant_id = tenant.id
        return await tokens_of(conn, tenant_id)


async def revoke(settings: Settings, token_id: uuid.UUID) -> TokenInfo:
    """Revoke a token: it registers nothing from now on."""
    async with registry_connection(settings) as conn:
        info = await revoke_token(conn, token_id)
        if info is None:
            raise InvalidArgument(f"no enrollment token {token_id}")
        await conn.commit()
    return info


# -- spending a use (in the registrar's transaction) ----------------------------------------------
