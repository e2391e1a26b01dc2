"""A bounded cache of open things that must be closed (tenant engines): least recently used
first out when full, and anything idle past a limit closed by `sweep`. Many tenants must not mean
one open pool each, forever."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    fingerprint: object
    last_used: float


class EngineCache(Generic[K, V]):
    """Maps a key to an open value built by `open(key)`; a value whose fingerprint changed (a new
    placement or login) is closed and rebuilt."""

    def __init__(
        self,
        *,
        max_size: int,
        idle_s: float,
        close: Callable[[V], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._max_size = max_size
        self._idle_s = idle_s
        self._close = close
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._next_sweep = clock() + idle_s / 10

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    async def get(self, key: K, fingerprint: object, open_: Callable[[], V]) -> V:
        """The value for `key`, opened if absent or if its fingerprint differs."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry.fingerprint != fingerprint:
            await self.discard(key)
            entry = None
        if entry is None:
            entry = _Entry(open_(), fingerprint, now)
            self._entries[key] = entry
            await self._evict_over_size()
        entry.last_used = now
        self._entries.move_to_end(key)
        if now >= self._next_sweep:  # sweeping is O(n): do it a few times per idle period
            self._next_sweep = now + self._idle_s / 10
            await self.sweep()
        return entry.value

    async def discard(self, key: K) -> bool:
        """Close and forget the engine of `key`; False if there was none."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        await self._close(entry.value)
        return True

    async def sweep(self) -> int:
        """Close every value idle longer than `idle_s`; returns how many were closed."""
        deadline = self._clock() - self._idle_s
        stale = [k for k, e in self._entries.items() if e.last_used < deadline]
        for key in stale:
            await self.discard(key)
        return len(stale)

    async def close(self) -> None:
        """Close every engine."""
        while self._entries:
            _, entry = self._entries.popitem(last=False)
            await self._close(entry.value)

    async def _evict_over_size(self) -> None:
        while len(self._entries) > self._max_size:
            _, entry = self._entries.popitem(last=False)
            await self._close(entry.value)
