"""registry foundation: placements, tenants, tenant schema versions, host bindings, tokens

Revision ID: r0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "r0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "registry_placements",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("port between 1 and 65535", name="registry_placements_port_range"),
    )
    op.create_table(
        "registry_tenants",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("slug", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("placement", sa.Text, sa.ForeignKey("registry_placements.name"), nullable=True),
        sa.Column("db_name", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "status in ('provisioning', 'active', 'suspended', 'deleting')",
            name="registry_tenants_status_known",
        ),
    )
    op.create_table(
        "registry_tenant_schema",
        sa.Column(
            "tenant_id",
            sa.Uuid,
            sa.ForeignKey("registry_tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("revision", sa.Text, nullable=True),
        sa.Column("migrated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_table(
        "registry_host_tenant",
        sa.Column("host_id", sa.Uuid, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Uuid,
            sa.ForeignKey("registry_tenants.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "registry_enrollment_tokens",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Uuid,
            sa.ForeignKey("registry_tenants.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("uses_total", sa.Integer, nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "uses_left between 0 and uses_total", name="registry_tokens_uses_in_range"
        ),
    )


def downgrade() -> None:
    op.drop_table("registry_enrollment_tokens")
    op.drop_table("registry_host_tenant")
    op.drop_table("registry_tenant_schema")
    op.drop_table("registry_tenants")
    op.drop_table("registry_placements")
