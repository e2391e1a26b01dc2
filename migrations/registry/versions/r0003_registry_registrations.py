"""registrations: which registration request created which host, so a retried request (same
message_id) gets the same answer and spends no second token use

Revision ID: r0003
Revises: r0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "r0003"
down_revision: str | None = "r0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registry_registrations",
        sa.Column("message_id", sa.Uuid, primary_key=True),
        sa.Column("host_id", sa.Uuid, nullable=False, unique=True),
        sa.Column(
            "tenant_id",
            sa.Uuid,
            sa.ForeignKey("registry_tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "token_id",
            sa.Uuid,
            sa.ForeignKey("registry_enrollment_tokens.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("key_version", sa.Integer, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("fqdn", sa.Text, nullable=False),
        sa.Column("machine_id", sa.Text, nullable=False),
        sa.Column("platform", sa.Text, nullable=False),
        sa.Column("agent_version", sa.Text, nullable=False),
        sa.Column(
            "registered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
    )


def downgrade() -> None:
    op.drop_table("registry_registrations")
