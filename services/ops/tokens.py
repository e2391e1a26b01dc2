"""Enrollment tokens, the operators' side: issued for one tenant, shown once, stored only as a
hash (`services.core.registry.tokens`, where registrations spend them), listed, revoked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, text, update

from services.core.errors import InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.core.registry.models import TenantStatus, enrollment_tokens, tenants
from services.core.registry.tokens import MAX_TTL, hash_token, new_token
from services.core.settings import Settings
from services.ops.tenants import registry_connection


# Recognisable in logs, secret scanners and pasted configs.
@dataclass(frozen=True)
class TokenInfo:
    """An enrollment token as operators see it (never the token itself)."""

    id: uuid.UUID
    tenant: str
    uses_total: int
    uses_left: int
    expires_at: datetime
    revoked_at: datetime | None
    note: str | None
    created_at: datetime

    @property
    def state(self) -> str:
        """usable, exhausted, expired or revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= datetime.now(UTC):
            return "expired"
        if self.uses_left == 0:
            return "exhausted"
        return "usable"

    def as_json(self) -> dict[str, object]:
        """The token as `token list --json` shows it."""
        return {
            "id": str(self.id),
            "tenant": self.tenant,
            "state": self.state,
            "uses_total": self.uses_total,
            "uses_left": self.uses_left,
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Issued:
    """A token just issued: the token (shown once) and what is kept of it."""

    token: str  # shown once, never stored
    info: TokenInfo


def _query() -> Select[Any]:
    return select(
        enrollment_tokens.c.id,
        tenants.c.slug,
        enrollment_tokens.c.uses_total,
        enrollment_tokens.c.uses_left,
        enrollment_tokens.c.expires_at,
        enrollment_tokens.c.revoked_at,
        enrollment_tokens.c.note,
        enrollment_tokens.c.created_at,
    ).join(tenants, tenants.c.id == enrollment_tokens.c.tenant_id)


async def issue(
    settings: Settings, slug: str, *, ttl: timedelta, uses: int, note: str | None
) -> Issued:
    """Issue a token for a tenant: `uses` registrations, for `ttl`."""
    if uses < 1:
        raise InvalidArgument("--uses must be at least 1")
    if ttl > MAX_TTL:
        raise InvalidArgument(f"--ttl may be at most {MAX_TTL.days} days: tokens always expire")
    token = new_token()
    async with registry_connection(settings) as conn:
        tenant = await registry.get_tenant(conn, slug)
        if tenant is None:
            raise TenantNotFound(slug)
        if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            raise InvalidArgument(f"tenant {slug!r} is {tenant.status}")
        token_id = uuid.uuid4()
        await conn.execute(
            enrollment_tokens.insert().values(
                id=token_id,
                tenant_id=tenant.id,
                token_hash=hash_token(token),
                uses_total=uses,
                uses_left=uses,
                expires_at=datetime.now(UTC) + ttl,
                note=note,
            )
        )
        await conn.commit()
        row = (await conn.execute(_query().where(enrollment_tokens.c.id == token_id))).one()
    return Issued(token, TokenInfo(*row))


async def list_tokens(settings: Settings, slug: str | None) -> list[TokenInfo]:
    """Every token (of one tenant, if given), oldest first."""
    async with registry_connection(settings) as conn:
        query = _query().order_by(enrollment_tokens.c.created_at)
        if slug is not None:
            if await registry.get_tenant(conn, slug) is None:
                raise TenantNotFound(slug)
            query = query.where(tenants.c.slug == slug)
        return [TokenInfo(*row) for row in await conn.execute(query)]


async def revoke(settings: Settings, token_id: uuid.UUID) -> TokenInfo:
    """Revoke a token: it registers nothing from now on."""
    async with registry_connection(settings) as conn:
        result = await conn.execute(
            update(enrollment_tokens)
            .where(enrollment_tokens.c.id == token_id)
            .values(revoked_at=text("coalesce(revoked_at, now())"))
            .returning(enrollment_tokens.c.id)
        )
        if result.first() is None:
            raise InvalidArgument(f"no enrollment token {token_id}")
        await conn.commit()
        row = (await conn.execute(_query().where(enrollment_tokens.c.id == token_id))).one()
    return TokenInfo(*row)


# -- spending a use (in the registrar's transaction) ----------------------------------------------
