"""When to renew or replace a short-lived login: pure decisions on a lease's times, shared by the
built-in broker and OpenBao, tested in a table."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# A lease is renewed (or replaced) once this share of its time to live has passed: early enough
# that a slow or briefly unreachable issuer does not leave a service without a login.
RENEW_AT = 2 / 3


class Action(enum.Enum):
    """What to do with a login now."""

    USE = "use"  # the login is good for a while yet
    RENEW = "renew"  # extend it (same login, same pools)
    REPLACE = "replace"  # issue a new one (new login, new pool)


@dataclass(frozen=True)
class Lease:
    """A login's life, in seconds of one clock (`time.time()`): when it was issued or last
    renewed, when it expires, the latest it may ever be renewed to, and whether it may be."""

    renewed_at: float
    expires_at: float
    max_expires_at: float
    renewable: bool

    def renew_due_at(self) -> float:
        """When the lease is due for renewal (two thirds of its life)."""
        return self.renewed_at + (self.expires_at - self.renewed_at) * RENEW_AT

    def valid_at(self, now: float, margin_s: float = 0.0) -> bool:
        """Whether the lease is still valid `margin_s` after `now`."""
        return now + margin_s < self.expires_at


def decide(lease: Lease | None, now: float, ttl_s: float) -> Action:
    """What to do with the current login before using it at `now`."""
    if lease is None or not lease.valid_at(now):
        return Action.REPLACE
    if now < lease.renew_due_at():
        return Action.USE
    # A renewal that cannot add at least a third of a TTL is not worth it: the login would be
    # due again at once. Replace it before its max TTL ends it.
    if lease.renewable and lease.max_expires_at - now >= ttl_s - ttl_s * RENEW_AT:
        return Action.RENEW
    return Action.REPLACE


def retry_after_s(lease: Lease | None, now: float) -> float:
    """How long to wait before trying the issuer again after it failed, while the current login
    (if any) still works: a quarter of what remains, between one and thirty seconds."""
    if lease is None or not lease.valid_at(now):
        return 1.0
    return min(max((lease.expires_at - now) / 4, 1.0), 30.0)
