"""The closed sets of siloflow's own state, with no I/O: what a tenant, a move and an operator
can be, and an advisory's status in the catalog and in a silo's findings. The tables build
their check constraints from them (`one_of`); `tests/integration/test_closed_sets.py` fails
when a member and the database's constraint disagree either way. (A report's kind is the
wire's, `schemas.reports.ReportKind`; a grant's role is `core.access.Role`; an audit entry's
outcome `core.audit.Outcome`.)"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from services.core.outcomes import Reason


class TenantStatus(StrEnum):
    """Where a tenant is in its life; the registry's check constraint allows these and no other."""

    PROVISIONING = "provisioning"  # being created (`tenant create` resumes it)
    ACTIVE = "active"  # routed to and committed for
    SUSPENDED = "suspended"  # by an operator: its reports are dead-lettered, its data kept
    DELETING = "deleting"  # being deleted (`tenant delete` finishes it)


TENANT_STATUSES = tuple(TenantStatus)


class MoveStep(StrEnum):
    """Where a tenant's move between placements is (`siloflow tenant move`): the step it does
    next, each one safe to run again. Until `switched` the tenant's reports wait in its queue
    and its source database is fenced; from `switched` on it commits on the target."""

    FENCING = "fencing"  # workers told to stop; close the source database to its logins
    COPYING = "copying"  # the source is fenced: copy it to the target (again, from scratch)
    VERIFYING = "verifying"  # compare every table's row count and the ledger's message ids
    SWITCHING = "switching"  # point the tenant at the target placement, in one transaction
    SWITCHED = "switched"  # committing on the target; drop (or keep) the fenced source

    @property
    def paused(self) -> bool:
        """Whether the tenant's reports wait (nothing may commit anywhere yet)."""
        return self is not MoveStep.SWITCHED


MOVE_STEPS = tuple(MoveStep)


def one_of(column: str, values: Iterable[str]) -> str:
    """A check constraint's condition allowing exactly these values of a closed set."""
    return f"{column} in ({', '.join(repr(str(v)) for v in values)})"


class OperatorStatus(StrEnum):
    """Whether an operator may act (a disabled one's tokens are refused)."""

    ACTIVE = "active"
    DISABLED = "disabled"


class HostStatus(StrEnum):
    """A host's status in its tenant's silo: one column, one closed set, holding both what its
    agent says of its health (the last heartbeat's `HeartbeatStatus`) and what the pipeline
    knows of its liveness (no heartbeat yet; silent too long; back after that). Kept as one set
    on purpose: a host answers one question, "how is it now", and the newest fact answers it
    (a heartbeat after `down` says its health; a report of another kind after `down` says only
    that it is `up`)."""

    UNKNOWN = "unknown"  # reported, but never a heartbeat
    OK = "ok"  # the last heartbeat's health
    DEGRADED = "degraded"
    CRITICAL = "critical"
    DOWN = "down"  # silent for longer than the sweeper's `host_down_after_s`
    UP = "up"  # reported again after `down`, its health not said since


# An advisory's status in the catalog and in a host's findings (the Debian tracker's words).
ADVISORY_STATUSES = ("resolved", "open", "undetermined")


def refusal(status: TenantStatus | str) -> Reason | None:
    """Why a tenant in this status takes no reports, or None if it takes them (it is active):
    the status part of `routing`'s one rule, which the router (into the tenant's queue) and the
    silo's seam (into its database) both read. A move is not a status: the seam waits it out
    on its own."""
    status = TenantStatus(status)  # a row's text, too
    if status is TenantStatus.ACTIVE:
        return None
    if status is TenantStatus.SUSPENDED:
        return Reason.TENANT_SUSPENDED
    if status is TenantStatus.DELETING:
        return Reason.TENANT_DELETED
    return Reason.TENANT_NOT_ACTIVE
