"""Enrollment tokens, the registry's side every enrolment touches: what a token looks like, the
hash that is all the registry keeps of it, and spending one use of it (one conditional UPDATE
... RETURNING, so two agents racing for the last use cannot both win). Issuing, listing and
revoking are the operators' (`services.ops.tokens`)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.register import RejectionReason
from services.core.domain import TenantStatus
from services.core.errors import InvalidArgument
from services.core.registry.models import enrollment_tokens, tenants

TOKEN_PREFIX = "sfe_"
TOKEN_BYTES = 32  # 256 bits of randomness
MAX_TTL = timedelta(days=365)


def hash_token(token: str) -> bytes:
    """What is stored. The token has 256 bits of entropy, so one SHA-256 is enough to make the
    stored value useless as a token (and a stored hash presented as a token hashes to another)."""
    return hashlib.sha256(token.encode()).digest()


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    """A new token: the prefix (an enrollment token's by default) and 256 random bits."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")


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
        """The token as `token list --json` (and the API) shows it."""
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


def check_issue(ttl: timedelta, uses: int) -> None:
    """Refuse a token that would register nobody or never expire."""
    if uses < 1:
        raise InvalidArgument("uses must be at least 1")
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise InvalidArgument(
            f"the TTL must be more than 0 and at most {MAX_TTL.days} days: tokens always expire"
        )


async def issue_for(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    ttl: timedelta,
    uses: int,
    note: str | None,
) -> Issued:
    """Issue a token for the tenant (the caller checked it may have one, and commits)."""
    check_issue(ttl, uses)
    token = new_token()
    token_id = uuid.uuid4()
    await conn.execute(
        enrollment_tokens.insert().values(
            id=token_id,
            tenant_id=tenant_id,
            token_hash=hash_token(token),
            uses_total=uses,
            uses_left=uses,
            expires_at=datetime.now(UTC) + ttl,
            note=note,
        )
    )
    row = (await conn.execute(_query().where(enrollment_tokens.c.id == token_id))).one()
    return Issued(token, TokenInfo(*row))


async def tokens_of(conn: AsyncConnection, tenant_id: uuid.UUID | None) -> list[TokenInfo]:
    """Every token (of one tenant, if given), oldest first."""
    query = _query().order_by(enrollment_tokens.c.created_at)
    if tenant_id is not None:
        query = query.where(enrollment_tokens.c.tenant_id == tenant_id)
    return [TokenInfo(*row) for row in await conn.execute(query)]


async def revoke_token(
    conn: AsyncConnection, token_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> TokenInfo | None:
    """Revoke a token (of that tenant, if given); None when there is no such token."""
    query = update(enrollment_tokens).where(enrollment_tokens.c.id == token_id)
    if tenant_id is not None:
        query = query.where(enrollment_tokens.c.tenant_id == tenant_id)
    result = await conn.execute(
        query.values(revoked_at=text("coalesce(revoked_at, now())")).returning(
            enrollment_tokens.c.id
        )
    )
    if result.first() is None:
        return None
    row = (await conn.execute(_query().where(enrollment_tokens.c.id == token_id))).one()
    return TokenInfo(*row)


_SPEND = """
    update registry_enrollment_tokens t set uses_left = uses_left - 1
    from registry_tenants r
    where t.token_hash = :hash and r.id = t.tenant_id
      and t.uses_left > 0 and t.revoked_at is null and t.expires_at > now()
      and r.status = :active
    returning t.id, t.tenant_id
"""
_WHY_NOT = """
    select t.uses_left, t.revoked_at is not null as revoked, t.expires_at <= now() as expired,
           r.status
    from registry_enrollment_tokens t join registry_tenants r on r.id = t.tenant_id
    where t.token_hash = :hash
"""


async def spend(conn: AsyncConnection, token: str) -> tuple[uuid.UUID, uuid.UUID] | RejectionReason:
    """Spend one use: (token id, tenant id), or the rejection code saying why not."""
    digest = hash_token(token)
    row = (
        await conn.execute(text(_SPEND), {"hash": digest, "active": TenantStatus.ACTIVE.value})
    ).first()
    if row is not None:
        return row[0], row[1]
    # Why not (read only for the answer: nothing is granted from here).
    why = (await conn.execute(text(_WHY_NOT), {"hash": digest})).first()
    if why is None:
        return "token-unknown"
    if why.revoked:
        return "token-revoked"
    if why.expired:
        return "token-expired"
    if why.status != TenantStatus.ACTIVE:
        return "tenant-suspended"
    return "token-exhausted"
