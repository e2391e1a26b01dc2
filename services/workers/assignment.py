"""Which worker shard owns which tenant: rendezvous (highest random weight) hashing, so each
tenant has one stable owner and adding a shard moves only the tenants it wins."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """A share of the tenants: shard `index` of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count}: index must be in 0..{self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"2/4"` -> the third of four shards."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard {text!r} is not INDEX/COUNT, e.g. 0/4") from None
        return cls(index, count)


def _weight(slug: str, index: int) -> int:
    # A stable hash (Python's own is salted per process): every process must agree.
    digest = hashlib.blake2b(f"{slug}\x00{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(slug: str, count: int) -> int:
    """The shard index that owns a tenant."""
    return max(range(count), key=lambda index: _weight(slug, index))


def share(slugs: Iterable[str], shard: Shard) -> set[str]:
    """The tenants a shard owns."""
    return {slug for slug in slugs if owner(slug, shard.count) == shard.index}
