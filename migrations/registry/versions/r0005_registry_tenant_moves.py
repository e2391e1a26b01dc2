"""tenant moves: one row per tenant being moved to another placement, its step recorded so that
`tenant move` resumes (or `--abort` rolls back) after a crash of anything; a change to it is a
tenant change notice, so workers stop and resume consuming the tenant's queue at once; and a
placement being drained takes no new tenant

Revision ID: r0005
Revises: r0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "r0005"
down_revision: str | None = "r0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must match services.core.names.Names.registry_channel (as r0002).
CHANNEL = "siloflow_registry_changes"
# The steps as of this revision (services.core.registry.models.MoveStep).
STEPS = ("fencing", "copying", "verifying", "switching", "switched")


def _notify_function(with_moves: bool) -> str:
    moves = (
        f"""
            elsif tg_table_name = 'registry_tenant_moves' then
                perform pg_notify('{CHANNEL}', json_build_object(
                    'tenant_id', coalesce(new.tenant_id, old.tenant_id))::text);"""
        if with_moves
        else ""
    )
    return f"""
        create or replace function registry_notify_change() returns trigger
        language plpgsql as $$
        begin
            if tg_table_name = 'registry_host_tenant' then
                perform pg_notify('{CHANNEL}', json_build_object(
                    'host_id', coalesce(new.host_id, old.host_id))::text);{moves}
            else
                perform pg_notify('{CHANNEL}', json_build_object(
                    'tenant_id', coalesce(new.id, old.id))::text);
            end if;
            return null;
        end $$
        """


def upgrade() -> None:
    op.create_table(
        "registry_tenant_moves",
        sa.Column(
            "tenant_id",
            sa.Uuid,
            sa.ForeignKey("registry_tenants.id", ondelete="cascade"),
            primary_key=True,
        ),
        sa.Column("source", sa.Text, sa.ForeignKey("registry_placements.name"), nullable=False),
        sa.Column("target", sa.Text, sa.ForeignKey("registry_placements.name"), nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("keep_source", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("progress", sa.Text, nullable=True),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            f"step in ({', '.join(repr(s) for s in STEPS)})",
            name="registry_tenant_moves_step_known",
        ),
        sa.CheckConstraint("source <> target", name="registry_tenant_moves_elsewhere"),
    )
    op.add_column(
        "registry_placements",
        sa.Column("draining", sa.Boolean, nullable=False, server_default="false"),
    )
    op.execute(_notify_function(with_moves=True))
    op.execute(
        "create trigger registry_tenant_moves_notify after insert or update or delete on "
        "registry_tenant_moves for each row execute function registry_notify_change()"
    )


def downgrade() -> None:
    op.execute("drop trigger registry_tenant_moves_notify on registry_tenant_moves")
    op.execute(_notify_function(with_moves=False))
    op.drop_table("registry_tenant_moves")
    op.drop_column("registry_placements", "draining")
