"""tenant report tables: host state from heartbeats and system info, hardware, package
snapshots, compliance results, and the newest-report guard per host and kind

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "t0002"
down_revision: str | None = "t0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("hosts", sa.Column("ipv4", postgresql.ARRAY(sa.Text), nullable=True))
    op.add_column("hosts", sa.Column("ipv6", postgresql.ARRAY(sa.Text), nullable=True))
    op.add_column("hosts", sa.Column("agent_version", sa.Text, nullable=True))
    op.add_column("hosts", sa.Column("uptime_s", sa.BigInteger, nullable=True))
    op.add_column("hosts", sa.Column("load_1", sa.Float, nullable=True))
    op.add_column("hosts", sa.Column("load_5", sa.Float, nullable=True))
    op.add_column("hosts", sa.Column("load_15", sa.Float, nullable=True))
    op.create_table(
        # Which report of each kind is the newest stored for a host: an older one that arrives
        # late is recorded in agent_messages but never overwrites newer state.
        "host_report_state",
        sa.Column("host_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("message_id", sa.Uuid, nullable=False),
        sa.PrimaryKeyConstraint("host_id", "kind"),
    )
    op.create_table(
        "host_hardware",
        sa.Column("host_id", sa.Uuid, primary_key=True),
        sa.Column("cpu_vendor", sa.Text, nullable=False),
        sa.Column("cpu_model", sa.Text, nullable=False),
        sa.Column("cpu_cores", sa.Integer, nullable=False),
        sa.Column("cpu_threads", sa.Integer, nullable=False),
        sa.Column("cpu_mhz", sa.Float, nullable=False),
        sa.Column("memory_mb", sa.BigInteger, nullable=False),
        sa.Column("disks", postgresql.JSONB, nullable=False),
        sa.Column("nics", postgresql.JSONB, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
    )
    op.create_table(
        "host_packages",
        sa.Column("host_id", sa.Uuid, nullable=False),
        sa.Column("manager", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("arch", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("host_id", "name", "arch", "version"),
    )
    op.create_index("host_packages_name", "host_packages", ["name", "version"])
    op.create_table(
        "compliance_results",
        sa.Column("host_id", sa.Uuid, nullable=False),
        sa.Column("benchmark_id", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("host_id", "benchmark_id", "rule_id"),
        sa.CheckConstraint(
            "status in ('pass', 'fail', 'error', 'notapplicable')",
            name="compliance_results_status_known",
        ),
    )


def downgrade() -> None:
    op.drop_table("compliance_results")
    op.drop_index("host_packages_name", table_name="host_packages")
    op.drop_table("host_packages")
    op.drop_table("host_hardware")
    op.drop_table("host_report_state")
    for column in ("load_15", "load_5", "load_1", "uptime_s", "agent_version", "ipv6", "ipv4"):
        op.drop_column("hosts", column)
