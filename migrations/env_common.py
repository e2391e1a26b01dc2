"""What the three chains' env.py files share: run on the connection siloflow hands over (or, for
authoring with the alembic CLI, on a database taken from siloflow's settings), with the chain's own
version table and an autogenerate filter limited to the chain's own table prefix."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from services.core.db import make_engine, provisioner_url
from services.core.names import VERSION_TABLES, partition_of
from services.core.settings import load_settings


def include_object_for(chain: str) -> Any:
    """An autogenerate filter that sees only this chain's tables (never a version table)."""
    version_tables = set(VERSION_TABLES.values())

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            return name not in version_tables and partition_of(name or "") == chain
        table = getattr(obj, "table", None)
        if table is not None:
            return partition_of(table.name) == chain
        return True

    return include_object


def _configure_and_run(connection: Connection, chain: str, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLES[chain],
        include_object=include_object_for(chain),
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run(chain: str, metadata: MetaData) -> None:
    """The body of every env.py."""
    config = context.config
    if context.is_offline_mode():
        context.configure(
            url="postgresql://",
            target_metadata=metadata,
            version_table=VERSION_TABLES[chain],
            include_object=include_object_for(chain),
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection, chain, metadata)
        return
    asyncio.run(_run_from_settings(chain, metadata))


async def _run_from_settings(chain: str, metadata: MetaData) -> None:
    # Authoring path only (`alembic --name <chain> ...`): the registry database as the provisioner.
    settings = load_settings()
    database = context.get_x_argument(as_dictionary=True).get("database")
    engine = make_engine(provisioner_url(settings, database), settings)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_configure_and_run, chain, metadata)
            await conn.commit()
    finally:
        await engine.dispose()
