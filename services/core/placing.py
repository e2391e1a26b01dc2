"""Where a new tenant's database goes, and where a drained placement's tenants go: a pure rule
over what each placement holds, so it is said (docs/scaling.md) and tested (table) in one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """A placement as the rule sees it."""

    name: str
    tenants: int  # tenant databases it holds (a tenant moving to it counts already)
    reachable: bool  # the provisioner can log in there now
    draining: bool  # an operator is emptying it: it takes no tenant


def choose(loads: Iterable[Load], *, excluding: str | None = None) -> str | None:
    """Of the reachable placements that are not being drained (and not `excluding`), the one
    with the fewest tenants; ties go to the first by name. None when there is none."""
    candidates = [
        load for load in loads if load.reachable and not load.draining and load.name != excluding
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda load: (load.tenants, load.name)).name
