"""Which tenant takes a host's reports, and whether it may take them now: the one rule, with no
I/O. The router reads it over its cached directory (into the tenant's queue); the silo's seam
reads it over the registry (into the tenant's database), and adds only what a database needs
beyond it (a placement, no move under way). Never a default tenant, never a guess."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from services.core.domain import TenantStatus, refusal
from services.core.outcomes import Reason


@dataclass(frozen=True)
class Binding:
    """A host's binding in the registry: to which tenant, and whether it was revoked."""

    host_id: uuid.UUID
    tenant_id: uuid.UUID
    revoked: bool


class Tenant(Protocol):
    """What the rule reads of a tenant (the router's `TenantState`, the registry's full
    `TenantRecord`: either will do)."""

    @property
    def slug(self) -> str:
        """The tenant's slug (its queue's and its database's name part)."""
        ...

    @property
    def status(self) -> TenantStatus:
        """Where the tenant is in its life."""
        ...


@dataclass(frozen=True)
class TenantState:
    """A tenant as the router keeps it: id, slug, status."""

    id: uuid.UUID
    slug: str
    status: TenantStatus


@dataclass(frozen=True)
class Route:
    """The tenant that takes the report."""

    slug: str


@dataclass(frozen=True)
class Unroutable:
    """No tenant can take the report: the reason code (its dead letter's) and the detail."""

    reason: Reason
    detail: str


def admits(tenant: Tenant | None, wanted: str) -> Route | Unroutable:
    """Whether the tenant (`wanted`, by whatever name the caller had) takes reports now."""
    if tenant is None:
        return Unroutable(Reason.TENANT_UNKNOWN, f"no tenant {wanted!r}")
    refused = refusal(tenant.status)
    if refused is not None:
        return Unroutable(refused, f"tenant {tenant.slug!r} is {tenant.status}")
    return Route(tenant.slug)


def resolve(
    host_id: uuid.UUID, binding: Binding | None, tenant: Tenant | None
) -> Route | Unroutable:
    """The host's tenant, if the host is bound, not revoked, and its tenant takes reports;
    otherwise why not."""
    if binding is None:
        return Unroutable(Reason.NO_TENANT_BINDING, f"host {host_id} is bound to no tenant")
    if binding.revoked:
        return Unroutable(Reason.HOST_REVOKED, f"host {host_id} was revoked")
    if tenant is None:
        return Unroutable(
            Reason.TENANT_UNKNOWN,
            f"host {host_id} is bound to tenant {binding.tenant_id}, "
            "which the registry does not know",
        )
    return admits(tenant, tenant.slug)
