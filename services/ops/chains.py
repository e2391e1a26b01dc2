"""The three Alembic chains (registry, shared, tenant), run on connections siloflow opens.
Alembic keeps its migration context in process-global state, so chains run one at a time in a
process (the lock says so)."""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.names import CHAINS, VERSION_TABLES

# The migrations package's alembic.ini, found as package data: importing the package itself
# would make siloflow's code import its migrations, which import siloflow's models.
_ALEMBIC_INI = Path(str(resources.files("migrations").joinpath("alembic.ini")))
_one_at_a_time = asyncio.Lock()


def alembic_config(chain: str) -> Config:
    """The chain's section of `migrations/alembic.ini`."""
    if chain not in CHAINS:
        raise ValueError(f"unknown migration chain {chain!r}; expected one of {CHAINS}")
    return Config(str(_ALEMBIC_INI), ini_section=chain)


@cache
def script_directory(chain: str) -> ScriptDirectory:
    """The chain's Alembic scripts."""
    return ScriptDirectory.from_config(alembic_config(chain))


def head_revision(chain: str) -> str:
    """The chain's single head (a chain with two heads is a bug caught by the tests)."""
    head = script_directory(chain).get_current_head()
    if head is None:
        raise RuntimeError(f"migration chain {chain!r} has no revisions")
    return head


def pending_revisions(chain: str, current: str | None) -> list[str]:
    """Revisions an upgrade from `current` to head would apply, oldest first."""
    script = script_directory(chain)
    revisions = script.iterate_revisions(head_revision(chain), current)
    return [rev.revision for rev in reversed(list(revisions))]


async def current_revision(conn: AsyncConnection, chain: str) -> str | None:
    """The chain's revision in the connection's database (None before its first migration)."""

    def read(sync_conn: Connection) -> str | None:
        context = MigrationContext.configure(
            sync_conn, opts={"version_table": VERSION_TABLES[chain]}
        )
        return context.get_current_revision()

    return await conn.run_sync(read)


async def upgrade(conn: AsyncConnection, chain: str, target: str = "head") -> str | None:
    """Upgrade the chain on this connection and commit; returns the revision now current."""
    await _run(conn, chain, "upgrade", target)
    return await current_revision(conn, chain)


async def downgrade(conn: AsyncConnection, chain: str, target: str = "base") -> str | None:
    """Downgrade the chain in the connection's database (to `base` by default)."""
    await _run(conn, chain, "downgrade", target)
    return await current_revision(conn, chain)


async def _run(conn: AsyncConnection, chain: str, direction: str, target: str) -> None:
    def run(sync_conn: Connection) -> None:
        config = alembic_config(chain)
        config.attributes["connection"] = sync_conn
        if direction == "upgrade":
            command.upgrade(config, target)
        else:
            command.downgrade(config, target)

    async with _one_at_a_time:
        await conn.run_sync(run)
        await conn.commit()
