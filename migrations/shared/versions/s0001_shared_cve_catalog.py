"""shared foundation: the CVE catalog

Revision ID: s0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shared_cves",
        sa.Column("cve_id", sa.Text, primary_key=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("severity", sa.Text, nullable=True),
        sa.Column("cvss", sa.Numeric(3, 1), nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.CheckConstraint("cve_id ~ '^CVE-[0-9]{4}-[0-9]{4,}$'", name="shared_cves_id_format"),
        sa.CheckConstraint("cvss between 0 and 10", name="shared_cves_cvss_range"),
    )


def downgrade() -> None:
    op.drop_table("shared_cves")
