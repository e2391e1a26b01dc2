"""Waiting out an outage: the one back-off every retry loop uses (the router's registry lookups,
the registrar's database work, the workers' commits, the registry's notice listener). Pure: the
waiting itself is `lifespan.stopped_within`, which a stop cuts short."""

from __future__ import annotations

from collections.abc import Iterator

# The first retry comes soon (most outages a service meets are a restart of a moment); each
# next one waits twice as long, up to the service's `retry_max_s`.
FIRST_S = 0.1
FACTOR = 2.0


def delays(max_s: float, *, first_s: float = FIRST_S, factor: float = FACTOR) -> Iterator[float]:
    """The waits between tries, forever: first_s, then each `factor` times the last, never more
    than max_s (nor less than it, if max_s is smaller than first_s)."""
    delay = min(first_s, max_s)
    while True:
        yield delay
        delay = min(delay * factor, max_s)
