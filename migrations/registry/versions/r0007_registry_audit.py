"""registry audit: server-wide acts, and tenant acts whose silo is gone or could not take them;
and a notice when an operator, their tokens or their grants change (the API's cache of callers)

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
# Must match services.core.names.Names.operators_channel.
CHANNEL = "siloflow_operator_changes"
OPERATOR_TABLES = ("registry_operators", "registry_operator_tokens", "registry_operator_grants")


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
    op.execute(
        f"""
        create function registry_notify_operator_change() returns trigger language plpgsql as $$
        begin
            perform pg_notify('{CHANNEL}', tg_table_name);
            return null;
        end $$
        """
    )
    for table in OPERATOR_TABLES:
        # A token marked used (last_used_at) changes no one's rights: no notice for that.
        columns = (
            " of operator_id, token_hash, expires_at, revoked_at"
            if table == "registry_operator_tokens"
            else ""
        )
        op.execute(
            f"create trigger {table}_notify after insert or update{columns} or delete "
            f"on {table} for each statement execute function registry_notify_operator_change()"
        )


def downgrade() -> None:
    for table in OPERATOR_TABLES:
        op.execute(f"drop trigger {table}_notify on {table}")
    op.execute("drop function registry_notify_operator_change()")
    op.drop_table("registry_audit")
