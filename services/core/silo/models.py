"""The tenant partition: unprefixed tables, one copy in each tenant's own database (its silo).
`host_id` values are the registry's ids, kept without a foreign key across the partition."""

from __future__ import annotations

from typing import get_args

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from schemas.reports import ComplianceStatus
from services.core.audit import Outcome
from services.core.domain import ADVISORY_STATUSES, HostStatus, one_of

metadata = MetaData()
TS = DateTime(timezone=True)

hosts = Table(
    "hosts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("hostname", Text, nullable=True),
    Column("fqdn", Text, nullable=True),
    Column("os_name", Text, nullable=True),
    Column("os_version", Text, nullable=True),
    Column("kernel", Text, nullable=True),
    Column("arch", Text, nullable=True),
    Column("status", Text, nullable=False, server_default=HostStatus.UNKNOWN.value),
    Column("first_seen_at", TS, nullable=False, server_default=func.now()),
    Column("last_seen_at", TS, nullable=True),
    Column("ipv4", ARRAY(Text), nullable=True),
    Column("ipv6", ARRAY(Text), nullable=True),
    Column("agent_version", Text, nullable=True),
    Column("uptime_s", BigInteger, nullable=True),
    Column("load_1", Float, nullable=True),
    Column("load_5", Float, nullable=True),
    Column("load_15", Float, nullable=True),
    CheckConstraint(one_of("status", HostStatus), name="hosts_status_known"),
)

# One row per committed report: its message_id primary key is what makes redelivery harmless.
agent_messages = Table(
    "agent_messages",
    metadata,
    Column("message_id", Uuid, primary_key=True),
    Column("host_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("sent_at", TS, nullable=False),
    Column("received_at", TS, nullable=True),
    Column("committed_at", TS, nullable=False, server_default=func.now()),
    Index("agent_messages_host_kind_sent", "host_id", "kind", "sent_at"),
    Index("agent_messages_committed_at", "committed_at"),
)

# The newest report of each kind per host (`compliance:<benchmark>` for compliance): a report
# older than this is recorded but never overwrites newer state.
host_report_state = Table(
    "host_report_state",
    metadata,
    Column("host_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("sent_at", TS, nullable=False),
    Column("message_id", Uuid, nullable=False),
    PrimaryKeyConstraint("host_id", "kind"),
)

host_hardware = Table(
    "host_hardware",
    metadata,
    Column("host_id", Uuid, primary_key=True),
    Column("cpu_vendor", Text, nullable=False),
    Column("cpu_model", Text, nullable=False),
    Column("cpu_cores", Integer, nullable=False),
    Column("cpu_threads", Integer, nullable=False),
    Column("cpu_mhz", Float, nullable=False),
    Column("memory_mb", BigInteger, nullable=False),
    Column("disks", JSONB, nullable=False),
    Column("nics", JSONB, nullable=False),
    Column("sent_at", TS, nullable=False),
)

host_packages = Table(
    "host_packages",
    metadata,
    Column("host_id", Uuid, nullable=False),
    Column("manager", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("arch", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("sent_at", TS, nullable=False),
    # The source package it was built from; null: the same as its own name or version.
    Column("source", Text, nullable=True),
    Column("source_version", Text, nullable=True),
    PrimaryKeyConstraint("host_id", "name", "arch", "version"),
    Index("host_packages_name", "name", "version"),
)

compliance_results = Table(
    "compliance_results",
    metadata,
    Column("host_id", Uuid, nullable=False),
    Column("benchmark_id", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("sent_at", TS, nullable=False),
    PrimaryKeyConstraint("host_id", "benchmark_id", "rule_id"),
    CheckConstraint(
        one_of("status", get_args(ComplianceStatus)),
        name="compliance_results_status_known",
    ),
)

# Vulnerabilities found in a host's packages against the shared catalog: one open finding per
# (host, package, CVE), and the resolved ones kept as the tenant's history. `cve_id` refers to the
# shared catalog softly (no foreign key crosses a partition).
findings = Table(
    "findings",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("host_id", Uuid, nullable=False),
    Column("package", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_version", Text, nullable=False),
    Column("cve_id", Text, nullable=False),
    Column("fixed_version", Text, nullable=True),
    Column("advisory_status", Text, nullable=False),
    Column("urgency", Text, nullable=False),
    Column("catalog_revision", Integer, nullable=False),
    Column("first_seen", TS, nullable=False),
    Column("resolved_at", TS, nullable=True),
    CheckConstraint(one_of("advisory_status", ADVISORY_STATUSES), name="findings_advisory_status"),
    Index(
        "findings_open",
        "host_id",
        "package",
        "cve_id",
        unique=True,
        postgresql_where=text("resolved_at is null"),
    ),
    Index("findings_cve", "cve_id"),
)

# What each host's findings were last evaluated with: its release (null while unknown: then it
# has none, and says so), the catalog revision and a digest of its packages (an unchanged
# snapshot at the same release and revision needs no matching); versions that did not parse.
host_findings_state = Table(
    "host_findings_state",
    metadata,
    Column("host_id", Uuid, primary_key=True),
    Column("release", Text, nullable=True),
    Column("catalog_revision", Integer, nullable=True),
    Column("unparsed_versions", Integer, nullable=False, server_default="0"),
    Column("evaluated_at", TS, nullable=False),
    Column("packages_digest", LargeBinary, nullable=True),
)

# Who did what to this tenant, and how it ended (services.core.audit): written by the CLI as
# the tenant's owner and by the API as its reader (which may INSERT here and nowhere else;
# no role is granted UPDATE or DELETE). It moves, is backed up and is deleted with the tenant.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("at", TS, nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint(one_of("outcome", tuple(Outcome)), name="audit_log_outcome_known"),
    Index("audit_log_at", "at"),
)
