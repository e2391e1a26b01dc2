"""shared advisories: a vulnerability catalog in the Debian Security Tracker's terms, one revision
row per import

Revision ID: s0002
Revises: s0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s0002"
down_revision: str | None = "s0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shared_catalog_revisions",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("releases", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("imported_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("advisories", sa.Integer, nullable=False),
        sa.Column("added", sa.Integer, nullable=False),
        sa.Column("changed", sa.Integer, nullable=False),
        sa.Column("removed", sa.Integer, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
    )
    op.create_table(
        "shared_advisories",
        sa.Column("release", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("cve_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("fixed_version", sa.Text, nullable=True),
        sa.Column("urgency", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        # The revision that last added or changed it: a revision's difference from the one before
        # is what re-evaluation applies.
        sa.Column("revision", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("release", "source", "cve_id"),
        sa.CheckConstraint(
            "status in ('resolved', 'open', 'undetermined')", name="shared_advisories_status"
        ),
        sa.CheckConstraint("cve_id ~ '^CVE-[0-9]{4}-[0-9]{4,}$'", name="shared_advisories_cve_id"),
        sa.CheckConstraint(
            "status <> 'resolved' or fixed_version is not null",
            name="shared_advisories_resolved_has_a_fix",
        ),
    )
    op.create_index("shared_advisories_revision", "shared_advisories", ["revision"])
    # Removed records, per revision: what re-evaluation must take back.
    op.create_table(
        "shared_advisories_removed",
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("release", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("cve_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("revision", "release", "source", "cve_id"),
    )
    # Reference data, identical for every tenant: any login of the server may read it (the
    # services read it with the registry's; nothing in it is a tenant's).
    for table in ("shared_catalog_revisions", "shared_advisories", "shared_advisories_removed"):
        op.execute(f"grant select on {table} to public")


def downgrade() -> None:
    op.drop_table("shared_advisories_removed")
    op.drop_index("shared_advisories_revision", table_name="shared_advisories")
    op.drop_table("shared_advisories")
    op.drop_table("shared_catalog_revisions")
