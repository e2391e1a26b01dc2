"""`siloflow operator ...`: server-global operators, their grants (a role on one tenant or on all)
and their API tokens (printed once; only a hash is kept), in the registry partition. Run from
the CLI, whose local user is the trust root and is recorded as who did it."""

from __future__ import annotations

import getpass
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.access import Role
from services.core.domain import OperatorStatus
from services.core.errors import InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.core.registry.models import operator_grants, operator_tokens, operators, tenants
from services.core.registry.operators import OPERATOR_TOKEN_PREFIX
from services.core.registry.tokens import hash_token, new_token
from services.core.settings import Settings
from services.ops.tenants import registry_connection

MAX_TOKEN_TTL = timedelta(days=365)
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,62}$")
ALL_TENANTS = "*"


def cli_user() -> str:
    """Who acts from this machine's CLI: its local user, the trust root."""
    return f"cli:{getpass.getuser()}"


def check_name(name: str) -> None:
    """Refuse a name the registry would not take, saying what one looks like."""
    if not _NAME.match(name):
        raise InvalidArgument(
            f"operator name {name!r}: use 2-63 characters of lower-case letters, digits, '.', "
            "'_' and '-', starting with a letter (e.g. 'alice' or 'ops.bob')"
        )


@dataclass(frozen=True)
class TokenView:
    """An API token as listed: never the token, which is shown once."""

    id: uuid.UUID
    note: str | None
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked: bool

    def as_json(self) -> dict[str, object]:
        """The token for `operator list --json`."""
        return {
            "id": str(self.id),
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked": self.revoked,
        }


@dataclass
class OperatorView:
    """An operator with their grants (tenant slug, or '*' for all, -> role) and tokens."""

    name: str
    status: OperatorStatus
    created_at: datetime
    created_by: str
    grants: dict[str, Role] = field(default_factory=dict)
    tokens: list[TokenView] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """The operator for `operator list --json`."""
        return {
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "grants": dict(self.grants),
            "tokens": [t.as_json() for t in self.tokens],
        }


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: the only time it is seen."""

    token: str
    id: uuid.UUID
    operator: str
    expires_at: datetime


async def _operator_id(conn: AsyncConnection, name: str) -> uuid.UUID:
    found = (await conn.execute(select(operators.c.id).where(operators.c.name == name))).first()
    if found is None:
        raise InvalidArgument(f"no operator {name!r} (siloflow operator list)")
    return found[0]  # type: ignore[no-any-return]


async def _tenant_id(conn: AsyncConnection, slug: str | None) -> uuid.UUID | None:
    if slug is None:
        return None
    record = await registry.get_tenant(conn, slug)
    if record is None:
        raise TenantNotFound(slug)
    return record.id


async def add_operator(settings: Settings, name: str) -> OperatorView:
    """Record a new operator (with no grant: they may do nothing yet)."""
    check_name(name)
    async with registry_connection(settings) as conn:
        existing = (
            await conn.execute(select(operators.c.id).where(operators.c.name == name))
        ).first()
        if existing is not None:
            raise InvalidArgument(f"operator {name!r} already exists")
        await conn.execute(
            insert(operators).values(id=uuid.uuid4(), name=name, created_by=cli_user())
        )
        await conn.commit()
    return next(o for o in await list_operators(settings) if o.name == name)


async def grant(settings: Settings, name: str, slug: str | None, role: Role) -> str:
    """Give the operator `role` on the tenant (or on all tenants): 'granted', or 'changed' when
    it replaced their role there."""
    async with registry_connection(settings) as conn:
        operator_id = await _operator_id(conn, name)
        tenant_id = await _tenant_id(conn, slug)
        where = (operator_grants.c.operator_id == operator_id) & (
            operator_grants.c.tenant_id.is_(None)
            if tenant_id is None
            else operator_grants.c.tenant_id == tenant_id
        )
        had = (await conn.execute(select(operator_grants.c.role).where(where))).first()
        await conn.execute(delete(operator_grants).where(where))
        await conn.execute(
            pg_insert(operator_grants).values(
                id=uuid.uuid4(),
                operator_id=operator_id,
                tenant_id=tenant_id,
                role=role,
                created_by=cli_user(),
            )
        )
        await conn.commit()
    return "granted" if had is None else "changed"


async def revoke_grant(settings: Settings, name: str, slug: str | None) -> bool:
    """Take the operator's grant on the tenant (or on all tenants) away; False if there was none."""
    async with registry_connection(settings) as conn:
        operator_id = await _operator_id(conn, name)
        tenant_id = await _tenant_id(conn, slug)
        done = await conn.execute(
            delete(operator_grants).where(
                operator_grants.c.operator_id == operator_id,
                operator_grants.c.tenant_id.is_(None)
                if tenant_id is None
                else operator_grants.c.tenant_id == tenant_id,
            )
        )
        await conn.commit()
    return bool(done.rowcount)


async def issue_token(
    settings: Settings, name: str, ttl: timedelta, note: str | None = None
) -> IssuedToken:
    """A new API token for an active operator, valid for `ttl`."""
    if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
        raise InvalidArgument(f"--ttl must be more than 0 and at most {MAX_TOKEN_TTL.days} days")
    token = new_token(OPERATOR_TOKEN_PREFIX)
    token_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + ttl
    async with registry_connection(settings) as conn:
        operator_id = await _operator_id(conn, name)
        status = (
            await conn.execute(select(operators.c.status).where(operators.c.id == operator_id))
        ).scalar_one()
        if status != OperatorStatus.ACTIVE:
            raise InvalidArgument(f"operator {name!r} is {status}: no token for them")
        await conn.execute(
            insert(operator_tokens).values(
                id=token_id,
                operator_id=operator_id,
                token_hash=hash_token(token),
                note=note,
                expires_at=expires_at,
            )
        )
        await conn.commit()
    return IssuedToken(token, token_id, name, expires_at)


async def revoke_token(settings: Settings, token_id: uuid.UUID) -> bool:
    """Revoke one API token; False if there is no such token or it was revoked already."""
    async with registry_connection(settings) as conn:
        done = await conn.execute(
            update(operator_tokens)
            .where(operator_tokens.c.id == token_id, operator_tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        await conn.commit()
    return bool(done.rowcount)


async def disable(settings: Settings, name: str) -> bool:
    """Disable an operator: every token of theirs is refused from now on (their grants stay, for
    the record); False if they were disabled already."""
    async with registry_connection(settings) as conn:
        operator_id = await _operator_id(conn, name)
        done = await conn.execute(
            update(operators)
            .where(operators.c.id == operator_id, operators.c.status == OperatorStatus.ACTIVE)
            .values(status=OperatorStatus.DISABLED)
        )
        await conn.execute(
            update(operator_tokens)
            .where(
                operator_tokens.c.operator_id == operator_id, operator_tokens.c.revoked_at.is_(None)
            )
            .values(revoked_at=datetime.now(UTC))
        )
        await conn.commit()
    return bool(done.rowcount)


async def list_operators(settings: Settings) -> list[OperatorView]:
    """Every operator, by name, with grants and tokens."""
    async with registry_connection(settings) as conn:
        views = {
            row.id: OperatorView(
                row.name, OperatorStatus(row.status), row.created_at, row.created_by
            )
            for row in await conn.execute(select(operators).order_by(operators.c.name))
        }
        grants = await conn.execute(
            select(operator_grants.c.operator_id, operator_grants.c.role, tenants.c.slug)
            .select_from(operator_grants)
            .outerjoin(tenants, tenants.c.id == operator_grants.c.tenant_id)
        )
        for row in grants:
            views[row.operator_id].grants[row.slug or ALL_TENANTS] = Role(row.role)
        for row in await conn.execute(
            select(operator_tokens).order_by(operator_tokens.c.created_at)
        ):
            views[row.operator_id].tokens.append(
                TokenView(
                    row.id,
                    row.note,
                    row.created_at,
                    row.expires_at,
                    row.last_used_at,
                    row.revoked_at is not None,
                )
            )
    return list(views.values())
