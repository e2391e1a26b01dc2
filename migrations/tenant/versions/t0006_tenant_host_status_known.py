"""tenant hosts: the status column allows only the host statuses (health and liveness, one set)

Revision ID: t0006
Revises: t0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "t0006"
down_revision: str | None = "t0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (services.core.domain.HostStatus): every value a worker or the sweeper
# has ever written, so the constraint holds on an upgraded silo's rows.
STATUSES = ("unknown", "ok", "degraded", "critical", "down", "up")


def upgrade() -> None:
    op.create_check_constraint(
        "hosts_status_known",
        "hosts",
        f"status in ({', '.join(repr(s) for s in STATUSES)})",
    )


def downgrade() -> None:
    op.drop_constraint("hosts_status_known", "hosts", type_="check")
