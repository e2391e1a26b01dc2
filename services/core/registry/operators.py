"""Operators as the API meets them: a bearer token turned into the operator it belongs to and
their grants, or nothing. Issuing and revoking are the operators' CLI (`services.ops.operators`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.functions import now

from services.core.access import Grant, Role
from services.core.domain import OperatorStatus
from services.core.registry.models import operator_grants, operator_tokens, operators
from services.core.registry.tokens import hash_token

OPERATOR_TOKEN_PREFIX = "sfo_"
MAX_TOKEN_CHARS = 100  # a real one is 47: anything longer is not looked up
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    """Who is calling: an active operator, through one unexpired, unrevoked token of theirs."""

    operator_id: uuid.UUID
    name: str
    token_id: uuid.UUID
    grants: tuple[Grant, ...]
    expires_at: float  # the token's expiry, epoch seconds (a caller remembered is checked again)


async def authenticate(conn: AsyncConnection, token: str) -> Caller | None:
    """The caller a token belongs to, or None (unknown, expired, revoked, or its operator
    disabled: all alike to the caller). Marks the token used."""
    if not token.startswith(OPERATOR_TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        return None
    found = (
        await conn.execute(
            select(
                operator_tokens.c.id,
                operator_tokens.c.last_used_at,
                operator_tokens.c.expires_at,
                operators.c.id.label("operator_id"),
                operators.c.name,
            )
            .select_from(operator_tokens)
            .join(operators, operators.c.id == operator_tokens.c.operator_id)
            .where(
                operator_tokens.c.token_hash == hash_token(token),
                operator_tokens.c.revoked_at.is_(None),
                operator_tokens.c.expires_at > now(),
                operators.c.status == OperatorStatus.ACTIVE,
            )
        )
    ).first()
    if found is None:
        return None
    # Marked used at most once a minute: a write (and its WAL flush) on every call would be
    # most of a read's cost, and a minute is as precise as "last used" needs to be.
    if found.last_used_at is None or found.last_used_at < datetime.now(UTC) - LAST_USED_EVERY:
        await conn.execute(
            update(operator_tokens)
            .where(operator_tokens.c.id == found.id)
            .values(last_used_at=now())
        )
    grants = await conn.execute(
        select(operator_grants.c.tenant_id, operator_grants.c.role).where(
            operator_grants.c.operator_id == found.operator_id
        )
    )
    return Caller(
        found.operator_id,
        found.name,
        found.id,
        tuple(Grant(row.tenant_id, Role(row.role)) for row in grants),
        found.expires_at.timestamp(),
    )
