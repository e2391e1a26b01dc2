"""Who may do what: operators' roles, the actions they permit, and whether a caller's grants
cover a tenant. Pure: the registry holds the grants, the API and the CLI ask here.

A grant names one tenant or all of them, and one role from a closed set:
- `admin`: everything, server-wide things included (operators, placements, every tenant);
- `operator`: a granted tenant's lifecycle, its enrollment tokens and its dead letters, reading
  its data and its audit trail;
- `viewer`: reading a granted tenant's data."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """A role a grant gives (the registry's check constraint allows these and no other)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Action(StrEnum):
    """What a call does, as far as permission goes."""

    READ = "read"  # a tenant's hosts, packages, findings, compliance results
    TOKENS = "tokens"  # issue, list and revoke a tenant's enrollment tokens
    DEAD_LETTERS = "dead-letters"  # list, show and replay letters that carry a granted tenant
    LIFECYCLE = "lifecycle"  # suspend, resume, move a tenant
    AUDIT = "audit"  # read who did what to a tenant (its audit trail)
    SERVER = "server"  # operators and grants, placements, tenants not yet granted to anyone


PERMITS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: frozenset(
        {Action.READ, Action.TOKENS, Action.DEAD_LETTERS, Action.LIFECYCLE, Action.AUDIT}
    ),
    Role.VIEWER: frozenset({Action.READ}),
}


@dataclass(frozen=True)
class Grant:
    """A role on one tenant (`tenant_id`) or on all of them (None)."""

    tenant_id: uuid.UUID | None
    role: Role

    def covers(self, tenant_id: uuid.UUID) -> bool:
        """Whether the grant is about this tenant."""
        return self.tenant_id is None or self.tenant_id == tenant_id


def sees(grants: Iterable[Grant], tenant_id: uuid.UUID) -> bool:
    """Whether any grant is about the tenant: a tenant the caller cannot see answers as one
    that does not exist."""
    return any(g.covers(tenant_id) for g in grants)


def may(grants: Iterable[Grant], action: Action, tenant_id: uuid.UUID | None = None) -> bool:
    """Whether the grants permit `action` on the tenant (or, with no tenant, server-wide: only
    a grant on all tenants counts)."""
    return any(
        action in PERMITS[g.role]
        and (g.tenant_id is None if tenant_id is None else g.covers(tenant_id))
        for g in grants
    )
