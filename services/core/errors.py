"""The error tree. `Permanent` errors will fail the same way on retry (dead-letter or refuse);
`Transient` ones may succeed later (wait and retry). Each carries what it is about as attributes,
and resolution errors carry the stable `reason` code that dead letters and logs use."""

from __future__ import annotations

import uuid


class SiloflowError(Exception):
    """Base of every error siloflow raises on purpose."""


class SettingsError(SiloflowError):
    """Raised when a setting is missing, malformed or contradicts another; names the setting."""


class InvalidArgument(SiloflowError):
    """Raised when an operator's argument is well-formed for the CLI but not acceptable
    (a bad slug, an unknown placement); nothing was changed."""


class Permanent(SiloflowError):
    """Raised for failures that retrying cannot fix."""


class Transient(SiloflowError):
    """Raised for failures that may go away (a server down, a timeout): wait and retry."""


class DatabaseUnavailable(Transient):
    """Raised when a database (registry or a tenant's) cannot be reached."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what} is unreachable: {detail}")
        self.what = what
        self.detail = detail


class CredentialsUnavailable(Transient):
    """Raised when no valid login for a tenant database can be had now (OpenBao or the
    provisioner unreachable, and the last login expired): wait and retry."""

    def __init__(self, tenant: str, detail: str) -> None:
        super().__init__(f"no login for tenant {tenant}'s database: {detail}")
        self.tenant = tenant
        self.detail = detail


class SchemaOutOfDate(Permanent):
    """Raised when a database's schema is not at the revision this code expects (run migrate)."""

    def __init__(self, database: str, current: str | None, head: str) -> None:
        state = "has no schema yet" if current is None else f"is at revision {current}"
        super().__init__(
            f"{database} {state}; this siloflow expects {head}: run `siloflow migrate`"
        )
        self.database = database
        self.current = current
        self.head = head


# -- the routing seam: a tenant or host that cannot be turned into a database -------------------


class ResolutionError(Permanent):
    """Raised when a tenant or host cannot be resolved to a tenant database. Never answered by
    falling back to another database."""

    reason = "unresolvable"


class TenantNotFound(ResolutionError):
    """Raised when no tenant has that slug or id."""

    reason = "tenant-unknown"

    def __init__(self, tenant: str) -> None:
        super().__init__(f"no tenant {tenant!r}")
        self.tenant = tenant


class TenantNotActive(ResolutionError):
    """Raised when the tenant exists but is not `active` (provisioning, suspended, deleting)."""

    reason = "tenant-not-active"

    def __init__(self, tenant: str, status: str) -> None:
        super().__init__(f"tenant {tenant!r} is {status}")
        self.tenant = tenant
        self.status = status


class TenantSuspended(TenantNotActive):
    """Raised when the tenant is suspended by an operator."""

    reason = "tenant-suspended"

    def __init__(self, tenant: str) -> None:
        super().__init__(tenant, "suspended")


class NoPlacement(ResolutionError):
    """Raised when the tenant has no placement (no recorded server for its database)."""

    reason = "tenant-no-placement"

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} has no placement")
        self.tenant = tenant


class HostNotBound(ResolutionError):
    """Raised when a host id has no binding to any tenant."""

    reason = "no-tenant-binding"

    def __init__(self, host_id: uuid.UUID) -> None:
        super().__init__(f"host {host_id} is bound to no tenant")
        self.host_id = host_id


# -- provisioning --------------------------------------------------------------------------------


class ProvisioningError(Permanent):
    """Raised when a tenant cannot be created, changed or deleted as asked."""

    def __init__(self, tenant: str, message: str) -> None:
        super().__init__(message)
        self.tenant = tenant


class TenantExists(ProvisioningError):
    """Raised when `tenant create` names a slug that is already active or suspended."""


class NotInSingleTenantMode(SiloflowError):
    """Raised when a multi-tenant command runs with `SILOFLOW_MULTITENANT=false`."""
