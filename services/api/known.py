"""What the API remembers between requests: who a token is, and a tenant's record by slug, each
kept only while the registry's notices are heard (a change to an operator, a token, a grant or a
tenant forgets at once; losing the channel forgets everything and caches nothing until it is
back). A lookup that raced with a notice does not keep its answer. The requests of a busy API
then cost no registry round trip at all, and revoking a token still takes effect at once."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from services.core.names import Names
from services.core.registry import queries as registry
from services.core.registry.notices import NoticeListener
from services.core.registry.operators import Caller, authenticate
from services.core.registry.tokens import hash_token
from services.core.settings import Settings

K = TypeVar("K")
V = TypeVar("V")

# Kept at most this long even while notices are heard (a bound on any missed notice), and at
# most this many of each.
KEPT_S = 30.0
MAX_KEPT = 10_000


class Remembered(Generic[K, V]):
    """Answers of one lookup, forgotten by `forget` (a notice) and after KEPT_S."""

    def __init__(self, listener_of: Callable[[], bool]) -> None:
        self._listening = listener_of
        self._kept: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._epoch = 0

    def forget(self, _why: str = "") -> None:
        """Forget everything (a notice, or the channel lost or regained)."""
        self._epoch += 1
        self._kept.clear()

    async def get(self, key: K, look_up: Callable[[], Awaitable[V | None]]) -> V | None:
        """The remembered answer, else `look_up()` (kept if no notice came meanwhile)."""
        now = time.monotonic()
        hit = self._kept.get(key)
        if hit is not None and now - hit[0] < KEPT_S and self._listening():
            return hit[1]
        epoch = self._epoch
        found = await look_up()
        if found is not None and epoch == self._epoch and self._listening():
            self._kept[key] = (now, found)
            self._kept.move_to_end(key)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)
        return found


class Known:
    """The API's callers and tenants, remembered while the registry's notices say nothing
    changed."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        names = Names(settings.namespace)
        self._engine = engine
        self._callers: Remembered[bytes, Caller] = Remembered(lambda: self._operators.listening)
        self._tenants: Remembered[str, registry.TenantRecord] = Remembered(
            lambda: self._tenant_notices.listening
        )
        self._operators = NoticeListener(
            settings,
            names.operators_channel,
            on_notice=self._callers.forget,
            on_reset=self._callers.forget,
            name="api operators",
        )
        self._tenant_notices = NoticeListener(
            settings,
            names.registry_channel,
            on_notice=self._tenants.forget,
            on_reset=self._tenants.forget,
            name="api tenants",
        )

    def start(self) -> None:
        """Start listening to the notices."""
        self._operators.start()
        self._tenant_notices.start()

    async def close(self) -> None:
        """Stop listening."""
        await self._operators.close()
        await self._tenant_notices.close()

    async def caller(self, token: str) -> Caller | None:
        """Who the token is, if it is valid now (expiry checked on every call)."""

        async def look_up() -> Caller | None:
            async with self._engine.begin() as conn:
                return await authenticate(conn, token)

        found = await self._callers.get(hash_token(token), look_up)
        if found is not None and found.expires_at <= time.time():
            self._callers.forget()
            return None
        return found

    async def tenant(self, slug: str) -> registry.TenantRecord | None:
        """The tenant of this slug."""

        async def look_up() -> registry.TenantRecord | None:
            async with self._engine.connect() as conn:
                return await registry.get_tenant(conn, slug)

        return await self._tenants.get(slug, look_up)
