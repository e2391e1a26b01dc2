"""registry audit: server-wide acts, and tenant acts whose silo is gone or could not take them

Revision ID: r0007
Revises: r0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "r0007"
down_revision: str | None = "r0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (services.core.audit.Outcome).
OUTCOMES = ("ok", "failed", "denied")


def upgrade() -> None:
    op.create_table(
        "registry_audit",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        # A slug, not a key: the entry outlives its tenant.
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint(
            f"outcome in ({', '.join(repr(o) for o in OUTCOMES)})",
            name="registry_audit_outcome_known",
        ),
    )
    op.create_index("registry_audit_tenant_at", "registry_audit", ["tenant", "at"])


def downgrade() -> None:
    op.drop_table("registry_audit")
