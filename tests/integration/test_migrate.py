"""`migrate` across tenants: one unreachable tenant database is reported and recorded, the others
still migrate, and the exit status says so."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import update

from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.names import Names
from services.core.pgadmin import set_role
from services.core.registry import queries as registry
from services.core.registry.models import tenants
from services.core.settings import Settings
from services.ops import chains as migrator
from services.ops import migrate, records
from services.ops.bootstrap import bootstrap
from services.ops.tenants import create_tenant, registry_connection
from tests.support import ADMIN_DSN, invoke_cli


async def _downgrade_tenant(settings: Settings, record: registry.TenantRecord) -> None:
    url = at_server(provisioner_url(settings), ServerAddress("127.0.0.1", 5432), record.db_name)
    async with one_connection(url, settings) as conn:
        await set_role(conn, Names(settings.namespace).tenant_owner_role(record.slug))
        await migrator.downgrade(conn, "tenant", "base")


async def test_one_unreachable_tenant_does_not_stop_the_others(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace()
    await bootstrap(settings, ADMIN_DSN)
    await migrate.migrate(settings)
    healthy = [(await create_tenant(settings, s)).tenant for s in ("alpha", "gamma")]
    broken = (await create_tenant(settings, "beta")).tenant
    for record in healthy:  # give the healthy tenants something to migrate
        await _downgrade_tenant(settings, record)
    async with registry_connection(settings) as conn:
        # A placement whose server is gone: nothing listens on port 1.
        await records.ensure_placement(conn, registry.Placement("gone", "127.0.0.1", 1))
        await conn.execute(
            update(tenants).where(tenants.c.id == broken.id).values(placement="gone")
        )
        await conn.commit()

    plan = await migrate.plan(settings)
    pending = {t.label: t.pending for t in plan.targets}
    assert pending["tenant alpha"] == migrator.pending_revisions("tenant", None)
    assert [t.label for t in plan.failed] == ["tenant beta"]

    # Through the CLI, as an operator runs it: the exit status reports the failure.
    result = await invoke_cli(["migrate", "--json"], settings)
    assert result.exit_code == 1, result.output
    assert "tenant beta" in result.output

    async with registry_connection(settings) as conn:
        for record in healthy:
            after = await registry.get_tenant(conn, record.slug)
            assert after is not None
            assert after.schema_revision == migrator.head_revision("tenant")
            assert after.last_error is None
        beta = await registry.get_tenant(conn, "beta")
    assert beta is not None
    assert beta.last_error and "connect call failed" in beta.last_error.lower()
    assert beta.schema_revision == migrator.head_revision("tenant")  # kept from before


async def test_status_and_dry_run_change_nothing(fresh_namespace: Callable[..., Settings]) -> None:
    settings = fresh_namespace()
    await bootstrap(settings, ADMIN_DSN)
    result = await invoke_cli(["migrate", "--dry-run"], settings)
    assert result.exit_code == 0, result.output
    assert "would apply" in result.output
    plan = await migrate.plan(settings)
    assert all(t.current is None for t in plan.targets)
    result = await invoke_cli(["migrate"], settings)
    assert result.exit_code == 0, result.output
    result = await invoke_cli(["migrate", "--status"], settings)
    assert result.exit_code == 0 and "at head" in result.output


async def test_migrate_before_bootstrap_says_what_to_do(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace()
    result = await invoke_cli(["migrate"], settings)
    assert result.exit_code == 1
    assert "siloflow bootstrap" in result.output
