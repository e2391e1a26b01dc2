"""The one error tree: every exception siloflow raises on purpose, from every package.

`SiloflowError` is the base. Under it, `Permanent` errors fail the same way on retry (dead-letter
the report, or refuse the command: nothing changed), and `Transient` ones may succeed later (wait
and retry). `SettingsError` and `InvalidArgument` are the operator's to correct. Each says in its
docstring when it is raised and carries what it is about as attributes; resolution errors carry
the stable `reason` code that dead letters and logs use. `services.core.failures.classify` sorts
any exception (siloflow's or a driver's) into what to do with it."""

from __future__ import annotations

import uuid

from services.core.domain import TenantStatus
from services.core.outcomes import Reason


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

    def __init__(self, what: str, detail: str, *, server: tuple[str, int] | None = None) -> None:
        super().__init__(f"{what} is unreachable: {detail}")
        self.what = what
        self.detail = detail
        self.server = server  # (host, port) when known: which server to name and mend


class CredentialsUnavailable(Transient):
    """Raised when no valid login for a tenant database can be had now (OpenBao or the
    provisioner unreachable, and the last login expired): wait and retry."""

    def __init__(self, tenant: str, detail: str) -> None:
        super().__init__(f"no login for tenant {tenant}'s database: {detail}")
        self.tenant = tenant
        self.detail = detail


class BrokerUnavailable(Transient):
    """Raised when RabbitMQ cannot be reached, or refuses the login, when connecting."""


class BrokerLoginRefused(SettingsError):
    """Raised when RabbitMQ refuses the login or the vhost of a URL: a setting (or a password
    file) is wrong, or nothing is bootstrapped; waiting cannot mend it."""


class ServiceStopped(SiloflowError):
    """Raised when a service is told to stop while it still waits for what it needs (the
    broker at start-up): it ends cleanly, having done nothing."""


class ManagementError(SiloflowError):
    """Raised when RabbitMQ's management API refuses a request or cannot be reached."""


class OpenBaoUnavailable(Transient):
    """Raised when OpenBao cannot be reached or is sealed: wait and retry."""


class Unroutable(Permanent):
    """Raised when the broker returned a mandatory publish: no queue is bound for it."""

    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(f"no queue takes {routing_key!r} on exchange {exchange or '(default)'!r}")
        self.exchange = exchange
        self.routing_key = routing_key


class TopologyConflict(Permanent):
    """Raised when an exchange or queue already exists with other arguments than siloflow's."""


class TopologyMissing(SiloflowError):
    """Raised when a queue a service consumes does not exist (the topology was never applied,
    or someone deleted it): services do not declare, `siloflow migrate` does. Neither permanent
    nor transient: it lasts until an operator applies the topology."""

    def __init__(self, queues: list[str]) -> None:
        super().__init__(
            f"queue{'s' if len(queues) > 1 else ''} {', '.join(queues)} missing on the broker: "
            "run `siloflow migrate` (or `siloflow topology apply`), which declares them"
        )
        self.queues = queues


class UnreadableReport(Permanent, ValueError):
    """Raised when a message on a tenant queue is not a report the router would have accepted
    (a worker dead-letters it `commit-rejected`)."""


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
    falling back to another database.

    Permanent for the question (asking again now gives the same answer), yet `classify` calls
    it transient where a worker meets it while committing: the tenant was suspended or deleted
    under the worker, an operator's act that an operator may undo, so the reports wait in their
    queue (the worker stops consuming it at its next reconcile) instead of being dead-lettered."""

    # The dead letter it makes, if it ends in one (a move is waited out: no reason).
    reason: Reason | None = None


class TenantNotFound(ResolutionError):
    """Raised when no tenant has that slug or id."""

    reason = Reason.TENANT_UNKNOWN

    def __init__(self, tenant: str) -> None:
        super().__init__(f"no tenant {tenant!r}")
        self.tenant = tenant


class TenantNotActive(ResolutionError):
    """Raised when the tenant exists but is not `active` (provisioning, suspended, deleting)."""

    reason = Reason.TENANT_NOT_ACTIVE

    def __init__(self, tenant: str, status: str) -> None:
        super().__init__(f"tenant {tenant!r} is {status}")
        self.tenant = tenant
        self.status = status


class TenantSuspended(TenantNotActive):
    """Raised when the tenant is suspended by an operator."""

    reason = Reason.TENANT_SUSPENDED

    def __init__(self, tenant: str) -> None:
        super().__init__(tenant, TenantStatus.SUSPENDED)


class TenantDeleting(TenantNotActive):
    """Raised when the tenant is being deleted (`tenant delete` finishes it)."""

    reason = Reason.TENANT_DELETED

    def __init__(self, tenant: str) -> None:
        super().__init__(tenant, TenantStatus.DELETING)


class TenantMoving(ResolutionError):
    """Raised when the tenant is being moved to another placement and its reports wait in its
    queue until the move switches it (`siloflow tenant move`)."""

    reason = None

    def __init__(self, tenant: str, step: str) -> None:
        super().__init__(f"tenant {tenant!r} is moving ({step}); its reports wait in its queue")
        self.tenant = tenant
        self.step = step


class NoPlacement(ResolutionError):
    """Raised when the tenant has no placement (no recorded server for its database)."""

    reason = Reason.TENANT_NO_PLACEMENT

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} has no placement")
        self.tenant = tenant


class HostNotBound(ResolutionError):
    """Raised when a host id has no binding to any tenant."""

    reason = Reason.NO_TENANT_BINDING

    def __init__(self, host_id: uuid.UUID) -> None:
        super().__init__(f"host {host_id} is bound to no tenant")
        self.host_id = host_id


class HostRevoked(ResolutionError):
    """Raised when a host's binding was revoked (`siloflow host revoke`)."""

    reason = Reason.HOST_REVOKED

    def __init__(self, host_id: uuid.UUID) -> None:
        super().__init__(f"host {host_id} was revoked")
        self.host_id = host_id


# -- provisioning --------------------------------------------------------------------------------


class ProvisioningError(Permanent):
    """Raised when a tenant cannot be created, changed or deleted as asked."""

    def __init__(self, tenant: str, message: str) -> None:
        super().__init__(message)
        self.tenant = tenant


class MoveInterrupted(Transient):
    """Raised when `tenant move` stops at a step (a server down, the copy cut short): the move
    stays recorded at that step, to be resumed or rolled back."""

    def __init__(self, tenant: str, step: str, why: str, *, abortable: bool) -> None:
        undo = " (or roll it back with `--abort`)" if abortable else ""
        super().__init__(
            f"the move of tenant {tenant} stopped at step {step}: {why}; run `siloflow tenant "
            f"move {tenant}` to resume it{undo}"
        )
        self.tenant = tenant
        self.step = step


class TenantExists(ProvisioningError):
    """Raised when `tenant create` names a slug that is already active or suspended."""


class HostAlreadyBound(Permanent):
    """Raised when binding a host that belongs to another tenant without `move`."""

    def __init__(self, host_id: uuid.UUID, tenant: str) -> None:
        super().__init__(
            f"host {host_id} is bound to tenant {tenant!r}; add --move to move it (its reports "
            "go to the new tenant from then on; what is stored stays where it is)"
        )
        self.host_id = host_id
        self.tenant = tenant


# -- the agent side (the reference client and the tools built on it) ---------------------------


class RegistrationFailed(Transient):
    """Raised when no answer to a registration came back after every attempt (is ingest
    running?); the same request may be sent again."""


class EnrollmentRefused(Permanent):
    """Raised when a registration of a batch enrolled together was rejected (the answer says
    why)."""


class ServerFailed(SiloflowError):
    """Raised when a server a tool starts for itself (the bench's PostgreSQL) does not come up."""


class NotInSingleTenantMode(SiloflowError):
    """Raised when a multi-tenant command runs with `SILOFLOW_MULTITENANT=false`."""


# -- the vulnerability catalog's sources -------------------------------------------------------


class ArchiveError(Permanent):
    """Raised when a Debian archive's index or package is not what the archive publishes or
    cannot be trusted (a bad signature, an expired index, a digest that differs, a file over
    its bound): names the file and what is wrong; nothing is imported."""


class ArchiveUnavailable(Transient):
    """Raised when a Debian archive cannot be reached or answers with an error."""
