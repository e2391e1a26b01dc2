"""tenant findings: the digest of the packages each host's findings were evaluated against, so
an unchanged snapshot (most of them) is not matched and compared again

Revision ID: t0004
Revises: t0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t0004"
down_revision: str | None = "t0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null: not known (evaluated before this column, or from packages read back): evaluate whole.
    op.add_column(
        "host_findings_state", sa.Column("packages_digest", sa.LargeBinary, nullable=True)
    )


def downgrade() -> None:
    op.drop_column("host_findings_state", "packages_digest")
