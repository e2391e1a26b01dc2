"""operators: server-global identities (people and their API tokens, kept as hashes) and their
grants, a role on one tenant or on all of them

Revision ID: r0006
Revises: r0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "r0006"
down_revision: str | None = "r0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (services.core.access.Role, services.core.registry.models.OperatorStatus).
ROLES = ("admin", "operator", "viewer")
STATUSES = ("active", "disabled")


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} in ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    now = sa.func.now()
    op.create_table(
        "registry_operators",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.CheckConstraint(_one_of("status", STATUSES), name="registry_operators_status_known"),
        sa.CheckConstraint(
            "name ~ '^[a-z][a-z0-9._-]{1,62}$'", name="registry_operators_name_shape"
        ),
    )
    op.create_table(
        "registry_operator_tokens",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "operator_id",
            sa.Uuid,
            sa.ForeignKey("registry_operators.id", ondelete="cascade"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "registry_operator_grants",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "operator_id",
            sa.Uuid,
            sa.ForeignKey("registry_operators.id", ondelete="cascade"),
            nullable=False,
        ),
        # Null: every tenant. A grant goes with its tenant.
        sa.Column(
            "tenant_id",
            sa.Uuid,
            sa.ForeignKey("registry_tenants.id", ondelete="cascade"),
            nullable=True,
        ),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.CheckConstraint(_one_of("role", ROLES), name="registry_operator_grants_role_known"),
    )
    # One grant per operator and tenant (and one on all tenants): a second replaces the first.
    op.execute(
        "create unique index registry_operator_grants_one on registry_operator_grants "
        "(operator_id, tenant_id) nulls not distinct"
    )


def downgrade() -> None:
    op.drop_table("registry_operator_grants")
    op.drop_table("registry_operator_tokens")
    op.drop_table("registry_operators")
