"""tenant foundation: hosts and agent_messages

Revision ID: t0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("hostname", sa.Text, nullable=True),
        sa.Column("fqdn", sa.Text, nullable=True),
        sa.Column("os_name", sa.Text, nullable=True),
        sa.Column("os_version", sa.Text, nullable=True),
        sa.Column("kernel", sa.Text, nullable=True),
        sa.Column("arch", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False, server_default="unknown"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "agent_messages",
        sa.Column("message_id", sa.Uuid, primary_key=True),
        sa.Column("host_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index(
        "agent_messages_host_kind_sent", "agent_messages", ["host_id", "kind", "sent_at"]
    )
    op.create_index("agent_messages_committed_at", "agent_messages", ["committed_at"])


def downgrade() -> None:
    op.drop_index("agent_messages_committed_at", table_name="agent_messages")
    op.drop_index("agent_messages_host_kind_sent", table_name="agent_messages")
    op.drop_table("agent_messages")
    op.drop_table("hosts")
