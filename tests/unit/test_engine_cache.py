"""The bounded engine cache: least recently used out first, idle ones closed, rebuilt on change."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.silo.engines import EngineCache


@dataclass
class Fake:
    name: str
    closed: bool = False


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Opened:
    items: list[Fake] = field(default_factory=list)

    def opener(self, name: str):  # type: ignore[no-untyped-def]
        def open_() -> Fake:
            fake = Fake(name)
            self.items.append(fake)
            return fake

        return open_


async def _close(fake: Fake) -> None:
    fake.closed = True


def make(max_size: int = 2, idle_s: float = 100.0) -> tuple[EngineCache[str, Fake], Clock, Opened]:
    clock = Clock()
    return EngineCache(max_size=max_size, idle_s=idle_s, close=_close, clock=clock), clock, Opened()


async def test_same_key_and_fingerprint_reuses_the_value() -> None:
    cache, _, opened = make()
    a1 = await cache.get("a", 1, opened.opener("a"))
    a2 = await cache.get("a", 1, opened.opener("a"))
    assert a1 is a2
    assert len(opened.items) == 1


async def test_least_recently_used_is_closed_when_full() -> None:
    cache, _, opened = make(max_size=2)
    a = await cache.get("a", 1, opened.opener("a"))
    b = await cache.get("b", 1, opened.opener("b"))
    await cache.get("a", 1, opened.opener("a"))  # a is now the most recent
    c = await cache.get("c", 1, opened.opener("c"))
    assert b.closed and not a.closed and not c.closed
    assert "b" not in cache and len(cache) == 2


async def test_idle_values_are_closed_by_sweep() -> None:
    cache, clock, opened = make(max_size=10, idle_s=60)
    a = await cache.get("a", 1, opened.opener("a"))
    clock.now = 30
    b = await cache.get("b", 1, opened.opener("b"))
    clock.now = 61
    assert await cache.sweep() == 1
    assert a.closed and not b.closed


async def test_get_sweeps_idle_values_on_its_own() -> None:
    cache, clock, opened = make(max_size=10, idle_s=60)
    a = await cache.get("a", 1, opened.opener("a"))
    clock.now = 120
    await cache.get("b", 1, opened.opener("b"))
    assert a.closed


async def test_a_changed_fingerprint_closes_and_reopens() -> None:
    cache, _, opened = make()
    old = await cache.get("a", "login-1", opened.opener("a"))
    new = await cache.get("a", "login-2", opened.opener("a"))
    assert old.closed and not new.closed and old is not new


async def test_close_closes_everything() -> None:
    cache, _, opened = make(max_size=5)
    for key in "abc":
        await cache.get(key, 1, opened.opener(key))
    await cache.close()
    assert all(f.closed for f in opened.items) and len(cache) == 0
