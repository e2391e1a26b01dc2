"""`/api/v1/tenants/{slug}/tokens`: a tenant's enrollment tokens (the `operator` role and above):
issued (the token shown once), listed, revoked. They live in the registry, as the CLI's do."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.api.deps import Audit, Registry, permitted
from services.api.errors import ApiError, not_found
from services.core.access import Action
from services.core.domain import TenantStatus
from services.core.errors import InvalidArgument
from services.core.registry import tokens
from services.core.registry.queries import TenantRecord

router = APIRouter(prefix="/tenants/{slug}/tokens", tags=["enrollment tokens"])

MAY = permitted(Action.TOKENS, "manage this tenant's enrollment tokens")


class TokenRequest(BaseModel):
    """What to issue: how many hosts may register with it, for how long."""

    model_config = ConfigDict(extra="forbid")

    uses: int = Field(1, ge=1, le=1_000_000)
    ttl_s: int = Field(86_400, ge=60, le=int(tokens.MAX_TTL.total_seconds()))
    note: str | None = Field(None, max_length=500)


class Token(BaseModel):
    """An enrollment token as listed (never the token itself)."""

    id: uuid.UUID
    state: str
    uses_total: int
    uses_left: int
    expires_at: datetime
    revoked_at: datetime | None
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, info: tokens.TokenInfo) -> Token:
        """The view of what the registry keeps."""
        return cls.model_validate(info, from_attributes=True)


class IssuedToken(Token):
    """A token just issued: `token` is shown this once, and only its hash is kept."""

    token: str


@router.post("", status_code=201)
async def issue(
    request: TokenRequest, engine: Registry, audit: Audit, tenant: TenantRecord = MAY
) -> IssuedToken:
    """Issue an enrollment token for the tenant."""
    async with audit.act("token.issue", tenant, **request.model_dump()) as detail:
        if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            raise ApiError(409, "conflict", f"the tenant is {tenant.status}")
        try:
            async with engine.begin() as conn:
                issued = await tokens.issue_for(
                    conn,
                    tenant.id,
                    ttl=timedelta(seconds=request.ttl_s),
                    uses=request.uses,
                    note=request.note,
                )
        except InvalidArgument as exc:
            raise ApiError(422, "invalid-request", str(exc)) from None
        detail["token_id"] = str(issued.info.id)
    return IssuedToken(token=issued.token, **Token.of(issued.info).model_dump())


@router.get("")
async def list_tokens(engine: Registry, tenant: TenantRecord = MAY) -> list[Token]:
    """The tenant's enrollment tokens, oldest first."""
    async with engine.connect() as conn:
        return [Token.of(info) for info in await tokens.tokens_of(conn, tenant.id)]


@router.delete("/{token_id}")
async def revoke(
    token_id: uuid.UUID, engine: Registry, audit: Audit, tenant: TenantRecord = MAY
) -> Token:
    """Revoke one of the tenant's tokens (a token of another tenant is no token here)."""
    async with audit.act("token.revoke", tenant, token_id=str(token_id)):
        async with engine.begin() as conn:
            info = await tokens.revoke_token(conn, token_id, tenant_id=tenant.id)
        if info is None:
            raise not_found("such token")
    return Token.of(info)
