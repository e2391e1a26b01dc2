"""Throttling token guesses, with no I/O: enrollment tokens at registration (ingest) and API
tokens (the API). A source that keeps presenting bad tokens is answered `rate-limited` (its
tokens are not even looked at) for a while that doubles with each
further failure; and all sources together get a bounded number of failed guesses per second, so
the token space cannot be searched by rotating sources either. Time is passed in (monotonic
seconds), so every rule is a table-driven unit test."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottleLimits:
    """How many bad tokens are free, how long the waits are, how many guesses all may make."""

    free_failures: int = 5  # bad tokens a source may present before it is slowed down
    penalty_s: float = 1.0  # the first wait past the free ones; doubles with each failure
    max_penalty_s: float = 300.0
    forget_after_s: float = 3600.0  # a source quiet this long starts afresh
    failures_per_s: float = 20.0  # all sources together: failed guesses refill at this rate
    failure_burst: float = 100.0  # ... up to this many at once
    max_sources: int = 100_000  # memory bound: the longest-quiet source is forgotten first


@dataclass
class _Source:
    failures: int
    last_failure_s: float


class Throttle:
    """Decides whether a registration request may have its token checked now."""

    def __init__(self, limits: ThrottleLimits, now_s: float) -> None:
        self.limits = limits
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._budget = limits.failure_burst
        self._budget_at_s = now_s

    def wait_s(self, source: str, now_s: float) -> float:
        """0 if the request may be checked now, else how long its source should wait."""
        state = self._sources.get(source)
        if state is not None and now_s - state.last_failure_s > self.limits.forget_after_s:
            del self._sources[source]
            state = None
        if state is not None and state.failures >= self.limits.free_failures:
            until = state.last_failure_s + self.penalty_s(state.failures)
            if now_s < until:
                return until - now_s
        self._refill(now_s)
        if self._budget < 1:
            return (1 - self._budget) / self.limits.failures_per_s
        return 0.0

    def penalty_s(self, failures: int) -> float:
        """How long a source with `failures` recent failures waits after its last one."""
        excess = failures - self.limits.free_failures
        if excess < 0:
            return 0.0
        return min(self.limits.penalty_s * 2.0 ** min(excess, 30), self.limits.max_penalty_s)

    def failed(self, source: str, now_s: float) -> int:
        """Record a bad token from `source`; returns its count of recent failures."""
        self._refill(now_s)
        self._budget -= 1
        state = self._sources.pop(source, None) or _Source(0, now_s)
        state.failures += 1
        state.last_failure_s = now_s
        self._sources[source] = state  # most recent last
        while len(self._sources) > self.limits.max_sources:
            self._sources.popitem(last=False)
        return state.failures

    def succeeded(self, source: str) -> None:
        """A good token: the source starts afresh."""
        self._sources.pop(source, None)

    def _refill(self, now_s: float) -> None:
        elapsed = max(now_s - self._budget_at_s, 0.0)
        self._budget = min(
            self._budget + elapsed * self.limits.failures_per_s, self.limits.failure_burst
        )
        self._budget_at_s = now_s
