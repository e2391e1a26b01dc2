"""Enrollment tokens, the registry's side every enrolment touches: what a token looks like, the
hash that is all the registry keeps of it, and spending one use of it (one conditional UPDATE
... RETURNING, so two agents racing for the last use cannot both win). Issuing, listing and
revoking are the operators' (`services.ops.tokens`)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.registry.models import TenantStatus

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


_SPEND = """
    update registry_enrollment_tokens t set uses_left = uses_left - 1
    from registry_tenants r
    where t.token_hash = :hash and r.id = t.tenant_id
      and t.uses_left > 0 and t.revoked_at is null and t.expires_at > now()
      and r.status = 'active'
    returning t.id, t.tenant_id
"""
_WHY_NOT = """
    select t.uses_left, t.revoked_at is not null as revoked, t.expires_at <= now() as expired,
           r.status
    from registry_enrollment_tokens t join registry_tenants r on r.id = t.tenant_id
    where t.token_hash = :hash
"""


async def spend(conn: AsyncConnection, token: str) -> tuple[uuid.UUID, uuid.UUID] | str:
    """Spend one use: (token id, tenant id), or the rejection code saying why not."""
    digest = hash_token(token)
    row = (await conn.execute(text(_SPEND), {"hash": digest})).first()
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
