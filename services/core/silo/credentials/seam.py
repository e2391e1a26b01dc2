"""The credentials seam: how a service logs in to a tenant's database, and how provisioning tells
the issuer about tenants. The routing seam asks `CredentialSource.login_for` for a login and never
builds one itself; which issuer answers (the built-in broker or OpenBao) is a setting.

Every login is short-lived, valid for one tenant's database only (it is a member of that tenant's
owner role and of nothing else), and acts as the owner role once connected, so every object stays
owned by the stable owner, never by a login that will be dropped."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import structlog
from sqlalchemy import URL

from services.core import metrics
from services.core.errors import CredentialsUnavailable
from services.core.names import Names
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.credentials import leases
from services.core.silo.credentials.leases import Action, Lease

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TenantLogin:
    """A way into one tenant database: the URL to connect with (the login and its password), the
    role to act as, and the lease that says how long it lives."""

    url: URL
    role: str
    lease: Lease
    lease_id: str | None = None  # OpenBao's; the built-in broker's logins are their own lease

    @property
    def username(self) -> str:
        """The login's user name."""
        return self.url.username or ""

    @property
    def fingerprint(self) -> str:
        """Identifies the login without its secret (a new one means a new pool; a renewal
        keeps the pool)."""
        return f"{self.url.render_as_string(hide_password=True)}#{self.role}"


def _serves(login: TenantLogin, tenant: TenantRecord) -> bool:
    """Whether the login reaches the database the tenant's record names now."""
    placement = tenant.placement
    return (
        placement is not None
        and login.url.database == tenant.db_name
        and (login.url.host, login.url.port) == (placement.host, placement.port)
    )


class CredentialSource(Protocol):
    """Issues the logins one process uses."""

    async def login_for(self, tenant: TenantRecord) -> TenantLogin:
        """A login valid for this tenant's database only, renewed or replaced when due."""
        ...

    async def evict(self, tenant: TenantRecord, login: TenantLogin) -> None:
        """The database refused `login`: forget it, so the next `login_for` issues another."""
        ...

    async def close(self) -> None:
        """Revoke the logins this process still holds (their sessions end with them)."""
        ...


class LeasedCredentials:
    """What both issuers share: one login per tenant, reused until due, renewed or replaced at
    two thirds of its life, and kept in use while the issuer is unreachable as long as it is
    valid. Subclasses issue, renew and revoke."""

    broker = "none"

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)
        self._clock = clock
        self._logins: dict[object, TenantLogin] = {}
        self._next_try: dict[object, float] = {}
        self._locks: defaultdict[object, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Logins issued at once, whatever the tenant count: each is an admin connection (the
        # built-in broker) or a request to OpenBao. A thousand tenants starting together once
        # opened a thousand admin connections and ran the server out of them.
        self._issuing = asyncio.Semaphore(settings.credential_issue_concurrency)

    async def login_for(self, tenant: TenantRecord) -> TenantLogin:
        """The tenant's login, renewed or replaced when due (one issue at a time per tenant)."""
        if tenant.placement is None:  # the routing seam refuses these before asking
            raise ValueError(f"tenant {tenant.slug!r} has no placement")
        async with self._locks[tenant.id]:
            now = self._clock()
            current = self._logins.get(tenant.id)
            if current is not None and not _serves(current, tenant):
                # The tenant moved: a login of its old server or database is of no use there.
                del self._logins[tenant.id]
                await self._revoke_quietly(current)
                current = None
            action = leases.decide(
                current.lease if current else None, now, self._settings.credential_ttl_s
            )
            if action is Action.USE:
                assert current is not None
                return current
            if (
                current is not None
                and current.lease.valid_at(now)
                and (now < self._next_try.get(tenant.id, 0.0))
            ):
                return current  # the issuer failed a moment ago: keep the valid login
            try:
                async with self._issuing:
                    if action is Action.RENEW:
                        assert current is not None
                        fresh = await self._renew(tenant, current)
                    else:
                        fresh = await self._issue(tenant)
            except Exception as exc:
                return self._failed(tenant, current, now, exc)
            self._logins[tenant.id] = fresh
            self._next_try.pop(tenant.id, None)
            metrics.labelled(metrics.CREDENTIAL_RENEWALS, self.broker).inc()
            log.info(
                "credentials.renewed" if action is Action.RENEW else "credentials.issued",
                tenant=tenant.slug,
                login=fresh.username,
                broker=self.broker,
                expires_in_s=round(fresh.lease.expires_at - self._clock(), 1),
            )
            return fresh

    def _failed(
        self, tenant: TenantRecord, current: TenantLogin | None, now: float, exc: Exception
    ) -> TenantLogin:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        lease = current.lease if current else None
        if current is not None and current.lease.valid_at(now, margin_s=1.0):
            self._next_try[tenant.id] = now + leases.retry_after_s(lease, now)
            log.warning(
                "credentials.renewal_failed",
                tenant=tenant.slug,
                broker=self.broker,
                error=detail,
                login=current.username,
                expires_in_s=round(current.lease.expires_at - now, 1),
            )
            return current
        raise CredentialsUnavailable(tenant.slug, f"{self.broker}: {detail}") from exc

    async def evict(self, tenant: TenantRecord, login: TenantLogin) -> None:
        """Forget a login the database refused, so the next `login_for` issues another."""
        async with self._locks[tenant.id]:
            current = self._logins.get(tenant.id)
            if current is not None and current.username == login.username:
                del self._logins[tenant.id]
                log.warning(
                    "credentials.evicted",
                    tenant=tenant.slug,
                    login=login.username,
                    broker=self.broker,
                )

    async def close(self) -> None:
        """Revoke every login this process holds."""
        held = list(self._logins.items())
        self._logins.clear()
        for _, login in held:
            await self._revoke_quietly(login)

    async def _revoke_quietly(self, login: TenantLogin) -> None:
        """Revoke a login; one that cannot be revoked expires on its own: say so and go on."""
        try:
            async with self._issuing:
                await self._revoke(login)
        except Exception as exc:
            log.warning(
                "credentials.revoke_failed",
                login=login.username,
                broker=self.broker,
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )

    def _lease(self, ttl_s: float, *, renewable: bool) -> Lease:
        """A lease issued now for `ttl_s`."""
        now = self._clock()
        return Lease(
            renewed_at=now,
            expires_at=now + ttl_s,
            max_expires_at=now + self._settings.credential_max_ttl_s,
            renewable=renewable,
        )

    def _renewed(self, login: TenantLogin, ttl_s: float) -> TenantLogin:
        """The same login, renewed now for `ttl_s` (its max TTL still counts from its issue)."""
        now = self._clock()
        lease = replace(login.lease, renewed_at=now, expires_at=now + ttl_s)
        return replace(login, lease=lease)

    async def _issue(self, tenant: TenantRecord) -> TenantLogin:
        raise NotImplementedError

    async def _renew(self, tenant: TenantRecord, login: TenantLogin) -> TenantLogin:
        return await self._issue(tenant)

    async def _revoke(self, login: TenantLogin) -> None:
        raise NotImplementedError
