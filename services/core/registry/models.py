"""The `registry_*` partition: tenants, where their databases live, which host belongs to which
tenant, and enrollment tokens. Foreign keys stay inside this partition."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.core.access import Role
from services.core.audit import Outcome
from services.core.domain import (
    MOVE_STEPS,
    TENANT_STATUSES,
    OperatorStatus,
    one_of,
)

metadata = MetaData()


placements = Table(
    "registry_placements",
    metadata,
    Column("name", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # `placement drain` is emptying it: no new tenant is placed there.
    Column("draining", Boolean, nullable=False, server_default="false"),
    CheckConstraint("port between 1 and 65535", name="registry_placements_port_range"),
)

tenants = Table(
    "registry_tenants",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("slug", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),
    # Nullable on purpose: a tenant whose placement was never recorded must be refused by the
    # routing seam, not crash it.
    Column("placement", Text, ForeignKey("registry_placements.name"), nullable=True),
    Column("db_name", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(one_of("status", TENANT_STATUSES), name="registry_tenants_status_known"),
)

tenant_schema = Table(
    "registry_tenant_schema",
    metadata,
    Column(
        "tenant_id", Uuid, ForeignKey("registry_tenants.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("revision", Text, nullable=True),
    Column("migrated_at", DateTime(timezone=True), nullable=True),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
)

host_tenant = Table(
    "registry_host_tenant",
    metadata,
    Column("host_id", Uuid, primary_key=True),
    Column(
        "tenant_id",
        Uuid,
        ForeignKey("registry_tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("bound_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

enrollment_tokens = Table(
    "registry_enrollment_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "tenant_id",
        Uuid,
        ForeignKey("registry_tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("uses_total", Integer, nullable=False),
    Column("uses_left", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("uses_left between 0 and uses_total", name="registry_tokens_uses_in_range"),
)

# Which registration request created which host: a retried request (same message_id) gets the
# same answer and spends no second token use.
registrations = Table(
    "registry_registrations",
    metadata,
    Column("message_id", Uuid, primary_key=True),
    Column("host_id", Uuid, nullable=False, unique=True),
    Column(
        "tenant_id", Uuid, ForeignKey("registry_tenants.id", ondelete="CASCADE"), nullable=False
    ),
    Column(
        "token_id",
        Uuid,
        ForeignKey("registry_enrollment_tokens.id", ondelete="SET NULL"),
        nullable=True,
    ),
    # The spent token's hash: a retry is answered only when it presents the same token.
    Column("token_hash", LargeBinary, nullable=True),
    Column("key_version", Integer, nullable=False),
    Column("hostname", Text, nullable=False),
    Column("fqdn", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("platform", Text, nullable=False),
    Column("agent_version", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

tenant_moves = Table(
    "registry_tenant_moves",
    metadata,
    # One move at a time per tenant; its row is the move's whole state, so `tenant move`
    # resumes (or `--abort` rolls back) from here after a crash of anything.
    Column(
        "tenant_id",
        Uuid,
        ForeignKey("registry_tenants.id", ondelete="cascade"),
        primary_key=True,
    ),
    Column("source", Text, ForeignKey("registry_placements.name"), nullable=False),
    Column("target", Text, ForeignKey("registry_placements.name"), nullable=False),
    Column("step", Text, nullable=False),
    Column("keep_source", Boolean, nullable=False, server_default="false"),
    Column("progress", Text, nullable=True),  # the last figure said (bytes copied, rows verified)
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(one_of("step", MOVE_STEPS), name="registry_tenant_moves_step_known"),
    CheckConstraint("source <> target", name="registry_tenant_moves_elsewhere"),
)


operators = Table(
    "registry_operators",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", Text, nullable=False),
    CheckConstraint(
        one_of("status", tuple(OperatorStatus)), name="registry_operators_status_known"
    ),
    CheckConstraint("name ~ '^[a-z][a-z0-9._-]{1,62}$'", name="registry_operators_name_shape"),
)

operator_tokens = Table(
    "registry_operator_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "operator_id", Uuid, ForeignKey("registry_operators.id", ondelete="cascade"), nullable=False
    ),
    Column("token_hash", LargeBinary, nullable=False, unique=True),  # never the token itself
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

operator_grants = Table(
    "registry_operator_grants",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "operator_id", Uuid, ForeignKey("registry_operators.id", ondelete="cascade"), nullable=False
    ),
    # Null: every tenant. A grant goes with its tenant.
    Column("tenant_id", Uuid, ForeignKey("registry_tenants.id", ondelete="cascade"), nullable=True),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_by", Text, nullable=False),
    CheckConstraint(one_of("role", tuple(Role)), name="registry_operator_grants_role_known"),
    # One grant per operator and tenant (and one on all tenants): a second replaces the first.
    Index(
        "registry_operator_grants_one",
        "operator_id",
        "tenant_id",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)

# Server-wide acts (operators, grants, placements, bootstrap-level commands), and tenant acts
# whose silo is gone (a deleted tenant) or could not take the entry (services.core.audit).
# `tenant` is a slug, a soft reference: the entry outlives its tenant.
audit = Table(
    "registry_audit",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("tenant", Text, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint(one_of("outcome", tuple(Outcome)), name="registry_audit_outcome_known"),
    Index("registry_audit_tenant_at", "tenant", "at"),
)
