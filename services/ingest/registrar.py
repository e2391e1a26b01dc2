"""Registration, the server side: spend a token use and bind a new host in one registry
transaction, then create the host's row in its tenant's database. Idempotent by message_id: a
retried request gets the same host id, spends nothing more, and repairs a half-done one; but only
when it presents the same enrollment token (its hash is compared in constant time), so a
message_id alone never returns a host key, and only while that token is not revoked: `token
revoke` rejects every registration with it from then on, retries of earlier ones included."""

from __future__ import annotations

import base64
import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import text

from schemas.register import (
    RegisterAccepted,
    RegisterRejected,
    RegisterRequest,
    RejectionReason,
)
from services.core.hostkeys import Keyring
from services.core.registry import queries as registry
from services.core.registry import tokens
from services.core.registry.models import enrollment_tokens, host_tenant, registrations
from services.core.silo.databases import TenantDatabases

_HOST_ROW = """
    insert into hosts (id, hostname, fqdn) values (:id, :hostname, :fqdn)
    on conflict (id) do nothing
"""


@dataclass(frozen=True)
class Registered:
    """What a registration created: the host, its tenant, its key version, the token's hash."""

    host_id: uuid.UUID
    tenant_id: uuid.UUID
    key_version: int
    token_hash: bytes | None  # of the token the first request spent
    token_revoked: bool = False  # that token has been revoked since


def same_token(registered: Registered, token: str) -> bool:
    """Whether a retry presents the token its first request spent (constant time)."""
    if registered.token_hash is None:
        return False
    return hmac.compare_digest(registered.token_hash, tokens.hash_token(token))


class Registrar:
    """Registers hosts: the registry's writes and the host's row in its tenant's database."""

    def __init__(
        self, registry_engine: AsyncEngine, databases: TenantDatabases, keyring: Keyring
    ) -> None:
        self._engine = registry_engine
        self._databases = databases
        self._keyring = keyring

    async def register(
        self, message_id: uuid.UUID, request: RegisterRequest
    ) -> RegisterAccepted | RegisterRejected:
        """Register (or answer a retry of) one request. Raises on transient trouble: the caller
        retries with the same message, which is safe."""
        done = await self._previous(message_id)
        if done is None:
            outcome = await self._register_new(message_id, request)
            if isinstance(outcome, str):
                return RegisterRejected(reason=outcome)
            done = outcome
        if not same_token(done, request.enrollment_token):
            # Someone replays a registration's message_id with another token (or none that
            # works): the answer is the one a wrong token gets, and it reveals nothing.
            return RegisterRejected(reason="token-unknown")
        if done.token_revoked:
            return RegisterRejected(reason="token-revoked")
        await self._ensure_host_row(done, request)
        key = self._keyring.host_key(done.host_id, done.key_version)
        return RegisterAccepted(
            host_id=done.host_id,
            host_key=base64.b64encode(key).decode(),
            key_version=done.key_version,
        )

    async def _previous(self, message_id: uuid.UUID) -> Registered | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        registrations.c.host_id,
                        registrations.c.tenant_id,
                        registrations.c.key_version,
                        registrations.c.token_hash,
                        enrollment_tokens.c.revoked_at.is_not(None),
                    )
                    .select_from(
                        registrations.outerjoin(
                            enrollment_tokens, enrollment_tokens.c.id == registrations.c.token_id
                        )
                    )
                    .where(registrations.c.message_id == message_id)
                )
            ).first()
        if row is None:
            return None
        host_id, tenant_id, key_version, token_hash, revoked = row
        return Registered(host_id, tenant_id, key_version, token_hash, bool(revoked))

    async def _register_new(
        self, message_id: uuid.UUID, request: RegisterRequest
    ) -> Registered | RejectionReason:
        host_id = uuid.uuid4()
        version = self._keyring.current
        async with self._engine.begin() as conn:
            spent = await tokens.spend(conn, request.enrollment_token)
            if isinstance(spent, str):
                await conn.rollback()
                return spent
            token_id, tenant_id = spent
            claimed = await conn.execute(
                pg_insert(registrations)
                .values(
                    message_id=message_id,
                    host_id=host_id,
                    tenant_id=tenant_id,
                    token_id=token_id,
                    token_hash=tokens.hash_token(request.enrollment_token),
                    key_version=version,
                    hostname=request.hostname,
                    fqdn=request.fqdn,
                    machine_id=request.machine_id,
                    platform=request.platform,
                    agent_version=request.agent_version,
                )
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(registrations.c.host_id)
            )
            if claimed.first() is None:
                # The same request raced itself (a retry while the first was in flight): undo
                # this use and answer what the first one did.
                await conn.rollback()
                previous = await self._previous(message_id)
                assert previous is not None
                return previous
            await conn.execute(insert(host_tenant).values(host_id=host_id, tenant_id=tenant_id))
        return Registered(host_id, tenant_id, version, tokens.hash_token(request.enrollment_token))

    async def _ensure_host_row(self, done: Registered, request: RegisterRequest) -> None:
        async with self._engine.connect() as conn:
            tenant = await registry.get_tenant_by_id(conn, done.tenant_id)
        if tenant is None:
            return  # the tenant was deleted meanwhile: nothing to repair
        async with self._databases.begin(tenant) as conn:
            await conn.execute(
                text(_HOST_ROW),
                {"id": done.host_id, "hostname": request.hostname, "fqdn": request.fqdn},
            )
