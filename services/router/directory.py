"""The router's view of the registry: host -> binding and tenant -> state, cached in memory and
kept fresh by the registry's NOTIFY on every change (a new binding or a suspension takes effect
within moments). While the notice channel is down nothing is cached, so nothing goes stale."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import structlog

from services.core import metrics
from services.core.domain import TenantStatus
from services.core.errors import DatabaseUnavailable
from services.core.failures import CONNECT_REFUSALS, CONNECTION_ERRORS
from services.core.names import Names
from services.core.registry.notices import NoticeListener
from services.core.routing import Binding, TenantState
from services.core.settings import Settings
from services.router.bindings import BindingCache

log = structlog.get_logger(__name__)

_BINDING_SQL = """
    select h.tenant_id, h.revoked_at is not null as revoked, t.slug, t.status
    from registry_host_tenant h left join registry_tenants t on t.id = h.tenant_id
    where h.host_id = $1
"""


class RouterDirectory:
    """The registry's answers through a bounded cache (`bindings.BindingCache`), invalidated
    by registry notices."""

    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.registry_url
        self._timeout_s = settings.connect_timeout_s
        self._channel = Names(settings.namespace).registry_channel
        self._cache = BindingCache(
            settings.router_cache_size, settings.router_cache_ttl_s, time.monotonic()
        )
        # Bumped on every invalidation: a lookup that raced with one does not cache its answer.
        self._epoch = 0
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._notices = NoticeListener(
            settings, self._channel, on_notice=self._on_notice, on_reset=self._clear, name="router"
        )
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        """Hosts cached now."""
        return self._cache.size

    @property
    def listening(self) -> bool:
        """Whether registry notices arrive now (the cache is used only then)."""
        return self._notices.listening

    async def start(self) -> None:
        """Start listening for registry notices."""
        self._notices.start()

    async def close(self) -> None:
        """Stop listening and close the registry pool."""
        await self._notices.close()
        if self._pool is not None:
            await self._pool.close()

    async def wait_listening(self, timeout_s: float) -> bool:
        """Wait until notices arrive; False if that took longer than `timeout_s`."""
        return await self._notices.wait_listening(timeout_s)

    # -- lookups ---------------------------------------------------------------------------------

    async def lookup(self, host_id: uuid.UUID) -> tuple[Binding | None, TenantState | None]:
        """The host's binding and its tenant's state (None, None when unbound). Raises
        `DatabaseUnavailable` when the registry cannot be asked."""
        started, misses = time.perf_counter(), self.misses
        try:
            return await self._lookup(host_id)
        finally:
            result = "miss" if self.misses > misses else "hit"
            metrics.labelled(metrics.ROUTER_LOOKUP_SECONDS, result).observe(
                time.perf_counter() - started
            )

    async def _lookup(self, host_id: uuid.UUID) -> tuple[Binding | None, TenantState | None]:
        cached = self._cache.get(host_id, time.monotonic())
        if cached is not None:
            self.hits += 1
            metrics.labelled(metrics.ROUTER_LOOKUPS, "hit").inc()
            return cached.binding, cached.tenant
        self.misses += 1
        metrics.labelled(metrics.ROUTER_LOOKUPS, "miss").inc()
        epoch = self._epoch
        row = await self._fetchrow(_BINDING_SQL, host_id)
        if row is None:
            self._remember(epoch, host_id, None, None)
            return None, None
        binding = Binding(host_id, row["tenant_id"], row["revoked"])
        tenant = (
            None
            if row["slug"] is None
            else TenantState(row["tenant_id"], row["slug"], TenantStatus(row["status"]))
        )
        self._remember(epoch, host_id, binding, tenant)
        return binding, tenant

    def _remember(
        self,
        epoch: int,
        host_id: uuid.UUID,
        binding: Binding | None,
        tenant: TenantState | None,
    ) -> None:
        # Only while notices arrive, and only if no notice came while the registry was asked.
        if not self._notices.listening or epoch != self._epoch:
            return
        self._cache.put(host_id, binding, tenant, time.monotonic())
        metrics.ROUTER_CACHE_SIZE.set(self._cache.size)

    def _clear(self, why: str) -> None:
        self._epoch += 1
        self._cache.clear(time.monotonic())
        metrics.ROUTER_CACHE_SIZE.set(0)
        log.info("router.cache_cleared", why=why)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._pool_lock:  # concurrent first lookups must not open two pools
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=4,
                        timeout=self._timeout_s,
                        server_settings={"application_name": "siloflow router"},
                    )
                except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                    # Any refusal to connect (down, closed to connections, restarting) is an
                    # outage to wait out, never a verdict on the report.
                    raise DatabaseUnavailable(
                        "the registry", str(exc) or type(exc).__name__
                    ) from exc
        try:
            return await self._pool.fetchrow(sql, *args, timeout=self._timeout_s)
        except (*CONNECTION_ERRORS, *CONNECT_REFUSALS) as exc:
            raise DatabaseUnavailable("the registry", str(exc) or type(exc).__name__) from exc

    # -- notices ---------------------------------------------------------------------------------

    def _on_notice(self, payload: str) -> None:
        self._epoch += 1
        try:
            notice = json.loads(payload)
            if "host_id" in notice:
                self._cache.forget_host(uuid.UUID(notice["host_id"]))
            elif "tenant_id" in notice:
                self._cache.forget_tenant(uuid.UUID(notice["tenant_id"]))
        except (ValueError, KeyError, TypeError):
            self._clear(f"unreadable notice {payload[:100]!r}")
