"""tenant findings: the source package of each installed binary, the vulnerabilities found in a
host's packages (kept with their history), and what each host was last evaluated with

Revision ID: t0003
Revises: t0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t0003"
down_revision: str | None = "t0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Null: the same as the binary's own name or version (the protocol's default).
    op.add_column("host_packages", sa.Column("source", sa.Text, nullable=True))
    op.add_column("host_packages", sa.Column("source_version", sa.Text, nullable=True))
    op.create_table(
        "findings",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("host_id", sa.Uuid, nullable=False),
        sa.Column("package", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_version", sa.Text, nullable=False),
        # A soft reference to the shared catalog (shared_advisories.cve_id): no foreign key
        # crosses a partition.
        sa.Column("cve_id", sa.Text, nullable=False),
        sa.Column("fixed_version", sa.Text, nullable=True),
        sa.Column("advisory_status", sa.Text, nullable=False),
        sa.Column("urgency", sa.Text, nullable=False),
        sa.Column("catalog_revision", sa.Integer, nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.CheckConstraint(
            "advisory_status in ('resolved', 'open', 'undetermined')",
            name="findings_advisory_status",
        ),
    )
    # One open finding per host, package and CVE; the resolved ones are its history.
    op.create_index(
        "findings_open",
        "findings",
        ["host_id", "package", "cve_id"],
        unique=True,
        postgresql_where=sa.text("resolved_at is null"),
    )
    op.create_index("findings_cve", "findings", ["cve_id"])
    op.create_table(
        # What each host's findings were last evaluated with: its release (from its latest
        # system_info; null while unknown, and then it has no findings) and the catalog revision.
        "host_findings_state",
        sa.Column("host_id", sa.Uuid, primary_key=True),
        sa.Column("release", sa.Text, nullable=True),
        sa.Column("catalog_revision", sa.Integer, nullable=True),
        sa.Column("unparsed_versions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("evaluated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("host_findings_state")
    op.drop_index("findings_cve", table_name="findings")
    op.drop_index("findings_open", table_name="findings")
    op.drop_table("findings")
    op.drop_column("host_packages", "source_version")
    op.drop_column("host_packages", "source")
