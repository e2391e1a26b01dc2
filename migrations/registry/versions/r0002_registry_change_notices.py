"""registry change notices: NOTIFY on binding and tenant changes, so routers invalidate their
caches within moments instead of waiting for a TTL

Revision ID: r0002
Revises: r0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "r0002"
down_revision: str | None = "r0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must match services.core.names.Names.registry_channel.
CHANNEL = "siloflow_registry_changes"


def upgrade() -> None:
    op.execute(
        f"""
        create function registry_notify_change() returns trigger language plpgsql as $$
        begin
            if tg_table_name = 'registry_host_tenant' then
                perform pg_notify('{CHANNEL}', json_build_object(
                    'host_id', coalesce(new.host_id, old.host_id))::text);
            else
                perform pg_notify('{CHANNEL}', json_build_object(
                    'tenant_id', coalesce(new.id, old.id))::text);
            end if;
            return null;
        end $$
        """
    )
    for table in ("registry_host_tenant", "registry_tenants"):
        op.execute(
            f"create trigger {table}_notify after insert or update or delete on {table} "
            "for each row execute function registry_notify_change()"
        )


def downgrade() -> None:
    for table in ("registry_host_tenant", "registry_tenants"):
        op.execute(f"drop trigger {table}_notify on {table}")
    op.execute("drop function registry_notify_change()")
