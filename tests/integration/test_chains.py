"""Each migration chain upgrades, downgrades to base and upgrades again on a real database, and
the live catalog obeys the partition rules: prefixes, and no foreign key across partitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from migrations.env_common import include_object_for
from migrations.metadata import METADATA
from services.core.db import one_connection, provisioner_url
from services.core.names import CHAINS, VERSION_TABLES, partition_of
from services.core.settings import Settings
from services.ops import chains as migrator
from services.ops.bootstrap import bootstrap
from tests.support import ADMIN_DSN

LIVE_TABLES = """
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p')
"""
LIVE_FOREIGN_KEYS = """
    select src.relname as source, dst.relname as target
    from pg_constraint k
    join pg_class src on src.oid = k.conrelid
    join pg_class dst on dst.oid = k.confrelid
    join pg_namespace n on n.oid = src.relnamespace
    where k.contype = 'f' and n.nspname = 'public'
"""


async def _tables(conn: AsyncConnection) -> set[str]:
    return {row[0] for row in await conn.execute(text(LIVE_TABLES))}


async def test_each_chain_goes_up_down_and_up_again(
    fresh_namespace: Callable[..., Settings],
) -> None:
    # Single-tenant mode puts all three chains in one database: the hardest case for version
    # tables and prefixes to stay apart.
    settings = fresh_namespace(multitenant=False)
    await bootstrap(settings, ADMIN_DSN)
    url = provisioner_url(settings, settings.registry_database)
    async with one_connection(url, settings) as conn:
        for chain in CHAINS:
            head = migrator.head_revision(chain)
            assert await migrator.upgrade(conn, chain) == head
            declared = set(METADATA[chain].tables)
            assert declared <= await _tables(conn)
            assert VERSION_TABLES[chain] in await _tables(conn)

            assert await migrator.downgrade(conn, chain, "base") is None
            left = await _tables(conn)
            assert not (declared & left), f"{chain} left tables behind: {declared & left}"

            assert await migrator.upgrade(conn, chain) == head
        # All three chains live side by side, each at its own head in its own version table.
        for chain in CHAINS:
            assert await migrator.current_revision(conn, chain) == migrator.head_revision(chain)


async def test_live_catalog_obeys_the_partition_rules(
    fresh_namespace: Callable[..., Settings],
) -> None:
    settings = fresh_namespace(multitenant=False)
    await bootstrap(settings, ADMIN_DSN)
    url = provisioner_url(settings, settings.registry_database)
    async with one_connection(url, settings) as conn:
        for chain in CHAINS:
            await migrator.upgrade(conn, chain)
        tables = await _tables(conn)
        expected = set(VERSION_TABLES.values())
        for metadata in METADATA.values():
            expected |= set(metadata.tables)
        assert tables == expected, "a table exists that no chain declares (or one is missing)"
        foreign_keys = (await conn.execute(text(LIVE_FOREIGN_KEYS))).all()
        assert foreign_keys, "the registry has foreign keys; finding none means the query is wrong"
        for source, target in foreign_keys:
            assert partition_of(source) == partition_of(target), f"{source} -> {target}"


async def test_each_chain_builds_exactly_the_tables_the_code_declares(
    fresh_namespace: Callable[..., Settings],
) -> None:
    """The migrations are the live schema's truth and the declared tables what the code (and
    autogenerate) assumes: alembic's own comparison of the two finds nothing to change."""
    settings = fresh_namespace(multitenant=False)
    await bootstrap(settings, ADMIN_DSN)
    url = provisioner_url(settings, settings.registry_database)
    async with one_connection(url, settings) as conn:
        for chain in CHAINS:
            await migrator.upgrade(conn, chain)
        for chain in CHAINS:
            include = include_object_for(chain)

            def diff(sync_conn: Connection, chain: str = chain, include: Any = include) -> Any:
                context = MigrationContext.configure(
                    sync_conn,
                    opts={
                        "include_object": include,
                        "compare_type": True,
                        "compare_server_default": False,
                    },
                )
                return compare_metadata(context, METADATA[chain])

            differences = await conn.run_sync(diff)
            assert differences == [], f"{chain}: {differences}"
