"""What the API's callers did, kept as the CLI's acts are (`core.audit`): a tenant's in its own
silo through the tenant's reader login (which may append to the audit log and write nothing
else), server-wide ones and those the silo cannot take in the registry. Routes get a `Recorder`
from the seam and say what they did; the seam itself records calls it refuses (403)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.audit import Entry, Outcome, Where, where_kept
from services.core.registry import audit as registry_audit
from services.core.registry.operators import Caller
from services.core.registry.queries import TenantRecord
from services.core.silo import audit as silo_audit
from services.core.silo.databases import TenantDatabases

log = structlog.get_logger(__name__)


class Recorder:
    """Keeps the audit entries of one caller's request."""

    def __init__(self, who: Caller, registry: AsyncEngine, silos: TenantDatabases) -> None:
        self._who = who
        self._registry = registry
        self._silos = silos

    async def keep(
        self,
        action: str,
        outcome: Outcome,
        tenant: TenantRecord | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Where:
        """Keep one entry where it belongs; the registry takes what the silo cannot."""
        entry = Entry(
            actor=f"operator:{self._who.name}",
            action=action,
            outcome=outcome,
            tenant=tenant.slug if tenant else None,
            detail={"api_token_id": str(self._who.token_id), **(detail or {})},
        )
        if tenant is not None and where_kept(entry, silo_reachable=True) is Where.SILO:
            try:
                async with self._silos.session(tenant) as conn:
                    await silo_audit.record(conn, entry)
                return Where.SILO
            except Exception as exc:  # never lost: the registry takes it, saying why
                log.warning("api.audit_silo_refused", tenant=tenant.slug, error=str(exc))
                refused = f"{type(exc).__name__}: {exc}"[:500]
                entry = replace(entry, detail=entry.detail | {"silo_refused": refused})
        async with self._registry.begin() as conn:
            await registry_audit.record(conn, entry)
        return Where.REGISTRY

    @asynccontextmanager
    async def act(
        self, action: str, tenant: TenantRecord | None = None, **detail: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Around an act: keep `ok` when the block ends, `failed` with the error's message when
        it raises (and raise it on). The block may add to the yielded detail."""
        extra: dict[str, Any] = dict(detail)
        try:
            yield extra
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            await self.keep(action, Outcome.FAILED, tenant, extra | {"error": str(message)[:1000]})
            raise
        await self.keep(action, Outcome.OK, tenant, extra)
