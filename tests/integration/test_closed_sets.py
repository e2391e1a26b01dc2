"""Every closed set the code knows is the set its table's check constraint allows, read back from
migrated databases (the registry and a tenant's silo): a member the database would refuse, or a
value the database allows that the code never names, fails here. So does a new `... in (...)`
constraint that names no closed set below."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import get_args

import pytest

from schemas.reports import ComplianceStatus, HeartbeatStatus
from services.core.access import Role
from services.core.audit import Outcome
from services.core.domain import (
    ADVISORY_STATUSES,
    HostStatus,
    MoveStep,
    OperatorStatus,
    TenantStatus,
)
from tests.integration.pipeline import Env, fetch

# (database: "registry" or "silo", constraint) -> the code's closed set
CLOSED_SETS: dict[tuple[str, str], Iterable[str]] = {
    ("registry", "registry_tenants_status_known"): TenantStatus,
    ("registry", "registry_tenant_moves_step_known"): MoveStep,
    ("registry", "registry_operators_status_known"): OperatorStatus,
    ("registry", "registry_operator_grants_role_known"): Role,
    ("registry", "registry_audit_outcome_known"): Outcome,
    ("silo", "audit_log_outcome_known"): Outcome,
    ("silo", "compliance_results_status_known"): get_args(ComplianceStatus),
    ("silo", "findings_advisory_status"): ADVISORY_STATUSES,
    ("silo", "hosts_status_known"): HostStatus,
}

# PostgreSQL keeps `col in ('a', 'b')` as `(col = ANY (ARRAY['a'::text, 'b'::text]))`.
_ANY_ARRAY = re.compile(r"= ANY \(\(?ARRAY\[(.*?)\]")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")

_CONSTRAINTS = """
    select conname, pg_get_constraintdef(oid) as definition from pg_constraint
    where contype = 'c' and connamespace = 'public'::regnamespace
"""


async def allowed_by_database(env: Env) -> dict[tuple[str, str], set[str]]:
    """Each `... in (...)` check constraint of the registry and the silo, as its values."""
    found: dict[tuple[str, str], set[str]] = {}
    databases = {"registry": f"{env.settings.namespace}_registry", "silo": env.a.db_name}
    for where, database in databases.items():
        for row in await fetch(database, _CONSTRAINTS):
            listed = _ANY_ARRAY.search(row["definition"])
            if listed is not None:
                values = {v.replace("''", "'") for v in _LITERAL.findall(listed.group(1))}
                found[(where, row["conname"])] = values
    return found


async def test_every_closed_set_is_what_its_constraint_allows(env: Env) -> None:
    in_database = await allowed_by_database(env)
    assert set(in_database) == set(CLOSED_SETS), "a constraint with no closed set, or the reverse"
    for key, members in CLOSED_SETS.items():
        assert in_database[key] == {str(m) for m in members}, key


@pytest.mark.parametrize(
    ("definition", "values"),
    [
        ("CHECK ((status = ANY (ARRAY['a'::text, 'b c'::text])))", {"a", "b c"}),
        ("CHECK ((x = ANY ((ARRAY['it''s'::character varying])::text[])))", {"it's"}),
    ],
)
def test_the_constraint_reader_reads_postgresqls_spelling(
    definition: str, values: set[str]
) -> None:
    listed = _ANY_ARRAY.search(definition)
    assert listed is not None
    assert {v.replace("''", "'") for v in _LITERAL.findall(listed.group(1))} == values


def test_a_heartbeats_status_is_a_host_status() -> None:
    # The silo's column holds what the last heartbeat said: the wire's set is within the host's.
    assert set(get_args(HeartbeatStatus)) <= {str(s) for s in HostStatus}
