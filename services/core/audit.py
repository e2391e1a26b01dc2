"""The audit trail's vocabulary: who did what, on which tenant, with what outcome. Pure: where an
entry is kept (the tenant's silo, or the registry for server-wide acts and for a tenant whose
silo is gone or cannot be reached) is decided here and written by `registry.audit` and
`silo.audit`.

Who: an operator as `operator:<name>` (through the API), or the CLI's local user as
`cli:<user>` (the trust root: whoever runs the CLI on this machine holds its credentials)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """How a recorded act ended (the tables' check constraints allow these and no other)."""

    OK = "ok"  # done
    FAILED = "failed"  # tried, and refused or broken on the way (the detail says why)
    DENIED = "denied"  # the caller's grants do not permit it: nothing was tried


class Where(StrEnum):
    """Which audit trail an entry goes to."""

    SILO = "silo"  # the tenant's own database: it moves, is backed up and deleted with it
    REGISTRY = "registry"  # server-wide acts, and tenant acts the silo cannot take


@dataclass(frozen=True)
class Entry:
    """One recorded act. `tenant` is a slug (a soft reference: no key crosses partitions)."""

    actor: str
    action: str
    outcome: Outcome
    tenant: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def row(self) -> dict[str, Any]:
        """The columns both trails share."""
        return {
            "id": self.id,
            "actor": self.actor,
            "action": self.action,
            "outcome": str(self.outcome),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Recorded:
    """An entry as read back, with when it was kept and in which trail."""

    at: datetime
    entry: Entry
    where: Where

    def as_json(self) -> dict[str, Any]:
        """The one JSON shape of `siloflow audit --json` and the API."""
        return {
            "id": str(self.entry.id),
            "at": self.at.isoformat(),
            "actor": self.entry.actor,
            "action": self.entry.action,
            "tenant": self.entry.tenant,
            "outcome": str(self.entry.outcome),
            "detail": self.entry.detail,
            "kept_in": str(self.where),
        }


def read_back(row: Mapping[Any, Any], where: Where, tenant: str | None) -> Recorded:
    """An entry as either trail's row holds it (the silo's has no tenant column: its own)."""
    return Recorded(
        at=row["at"],
        entry=Entry(
            id=row["id"],
            actor=row["actor"],
            action=row["action"],
            outcome=Outcome(row["outcome"]),
            tenant=tenant,
            detail=row["detail"],
        ),
        where=where,
    )


# Acts that end a tenant's silo: their entry must outlive it, so it is kept in the registry.
ENDS_SILO = frozenset({"tenant.delete"})


def where_kept(entry: Entry, *, silo_reachable: bool) -> Where:
    """The trail an entry goes to: its tenant's silo when it has one that can take it."""
    if entry.tenant is None or entry.action in ENDS_SILO or not silo_reachable:
        return Where.REGISTRY
    return Where.SILO


def merged(*trails: list[Recorded], limit: int) -> list[Recorded]:
    """Entries of several trails, newest first, at most `limit`."""
    every = [r for trail in trails for r in trail]
    every.sort(key=lambda r: (r.at, str(r.entry.id)), reverse=True)
    return every[:limit]
