"""The router's decision, with no I/O: given what the registry says about a host and its tenant,
route the report to that tenant's queue or say why it cannot go anywhere. Never a default
tenant, never a guess."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.core.outcomes import Reason


@dataclass(frozen=True)
class TenantState:
    id: uuid.UUID
    slug: str
    status: str


@dataclass(frozen=True)
class HostBinding:
    host_id: uuid.UUID
    tenant_id: uuid.UUID
    revoked: bool


@dataclass(frozen=True)
class Route:
    slug: str


@dataclass(frozen=True)
class Unroutable:
    reason: Reason
    detail: str


def decide(
    host_id: uuid.UUID, binding: HostBinding | None, tenant: TenantState | None
) -> Route | Unroutable:
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
    if tenant.status == "suspended":
        return Unroutable(Reason.TENANT_SUSPENDED, f"tenant {tenant.slug!r} is suspended")
    if tenant.status == "deleting":
        return Unroutable(Reason.TENANT_DELETED, f"tenant {tenant.slug!r} is being deleted")
    if tenant.status != "active":
        return Unroutable(Reason.TENANT_NOT_ACTIVE, f"tenant {tenant.slug!r} is {tenant.status}")
    return Route(tenant.slug)
