"""One tenant database copied with PostgreSQL's own tools, and counted: `pg_dump` in its custom
format streamed into `pg_restore` (a move) or into a file (a backup), run as the provisioner
acting as the tenant's owner role (`--role`), never as a superuser; and a census of what a
database holds (each table's row count, the ledger's message ids) to compare two copies by."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db import one_connection
from services.core.errors import ProvisioningError
from services.core.pgadmin import ident, set_role
from services.core.settings import Settings

CHUNK_BYTES = 1 << 20
# The ledger: one row per committed report, keyed by its message id (tenant chain t0001).
LEDGER = "agent_messages"


@dataclass(frozen=True)
class Silo:
    """One tenant database as the provisioner reaches it, and the owner role it acts as."""

    tenant: str
    url: URL  # the provisioner's identity on the database's server, at that database
    owner: str

    @property
    def where(self) -> str:
        """The database and its server, as messages name them."""
        return f"database {self.url.database} on {self.url.host}:{self.url.port or 5432}"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ProvisioningError(
            "-",
            f"{name} is not installed here: install PostgreSQL's client tools "
            "(Debian: apt install postgresql-client), at least the servers' major version",
        )
    return found


def _connection(silo: Silo) -> tuple[list[str], dict[str, str]]:
    """Command-line arguments and environment that reach the silo (the password never on the
    command line, where `ps` shows it)."""
    url = silo.url
    args = [
        *("--host", url.host or "127.0.0.1", "--port", str(url.port or 5432)),
        *("--username", url.username or "", "--dbname", url.database or "", "--no-password"),
        f"--role={silo.owner}",
    ]
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


async def _stderr(stream: asyncio.StreamReader | None) -> str:
    return (await stream.read()).decode(errors="replace").strip() if stream else ""


def _failed(tool: str, silo: Silo, code: int | None, said: str) -> ProvisioningError:
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    last = errors[0] if errors else lines[-1] if lines else f"exit status {code}"
    return ProvisioningError(silo.tenant, f"{tool} of {silo.where} failed: {last}")


async def _dump(source: Silo, snapshot: str | None = None) -> asyncio.subprocess.Process:
    args, env = _connection(source)
    if snapshot is not None:
        args.append(f"--snapshot={snapshot}")
    # Custom format: compressed, restorable in one transaction, read back by pg_restore only.
    return await asyncio.create_subprocess_exec(
        _tool("pg_dump"),
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _pump(
    dump: asyncio.subprocess.Process,
    write: Callable[[bytes], object],
    progress: Callable[[int], None],
) -> int:
    assert dump.stdout is not None
    copied = 0
    while chunk := await dump.stdout.read(CHUNK_BYTES):
        drained = write(chunk)
        if asyncio.iscoroutine(drained):
            await drained
        copied += len(chunk)
        progress(copied)
    return copied


async def _restore(target: Silo) -> asyncio.subprocess.Process:
    args, env = _connection(target)
    # One transaction: either the whole dump is restored or nothing is.
    return await asyncio.create_subprocess_exec(
        _tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def copy(source: Silo, target: Silo, progress: Callable[[int], None]) -> int:
    """Stream the source into the (empty) target in one transaction; returns the bytes of the
    dump. Either everything is restored or nothing is."""
    dump = await _dump(source)
    restore = await _restore(target)
    assert restore.stdin is not None
    stdin = restore.stdin
    dump_said = asyncio.ensure_future(_stderr(dump.stderr))
    restore_said = asyncio.ensure_future(_stderr(restore.stderr))

    async def write(chunk: bytes) -> None:
        stdin.write(chunk)
        await stdin.drain()

    try:
        copied = await _pump(dump, write, progress)
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        copied = -1  # pg_restore gave up: its own words say why
    finally:
        dumped, restored = await dump.wait(), await restore.wait()
    if dumped != 0:
        raise _failed("pg_dump", source, dumped, await dump_said)
    if restored != 0 or copied < 0:
        raise _failed("pg_restore", target, restored, await restore_said)
    return copied


async def restore_from(target: Silo, dump: IO[bytes], progress: Callable[[int], None]) -> int:
    """Restore a dump read from `dump` into the (empty) target, in one transaction."""
    restore = await _restore(target)
    assert restore.stdin is not None
    said = asyncio.ensure_future(_stderr(restore.stderr))
    copied = 0
    try:
        while chunk := dump.read(CHUNK_BYTES):
            restore.stdin.write(chunk)
            await restore.stdin.drain()
            copied += len(chunk)
            progress(copied)
        restore.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        copied = -1
    finally:
        code = await restore.wait()
    if code != 0 or copied < 0:
        raise _failed("pg_restore", target, code, await said)
    return copied


async def dump_to(
    source: Silo, out: IO[bytes], settings: Settings, progress: Callable[[int], None]
) -> tuple[str, Census]:
    """Write the source's dump to `out`; returns its SHA-256 and the census of the very
    snapshot it dumped (exported to pg_dump from the transaction that counts it), so the two
    agree while the tenant keeps committing."""
    async with one_connection(source.url, settings) as conn:
        await conn.execute(text("set transaction isolation level repeatable read read only"))
        await set_role(conn, source.owner)
        snapshot = (await conn.execute(text("select pg_export_snapshot()"))).scalar_one()
        counted = await _count(conn)
        dump = await _dump(source, snapshot)
        said = asyncio.ensure_future(_stderr(dump.stderr))
        digest = hashlib.sha256()

        def write(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        try:
            await _pump(dump, write, progress)
        finally:
            code = await dump.wait()
        await conn.rollback()
    if code != 0:
        raise _failed("pg_dump", source, code, await said)
    return digest.hexdigest(), counted


@dataclass(frozen=True)
class Census:
    """What a tenant database holds: each table's row count, and its ledger's message ids (how
    many, and a digest of them in order)."""

    rows: dict[str, int]
    ledger_ids: int
    ledger_digest: str

    @property
    def total_rows(self) -> int:
        """Rows in every table together."""
        return sum(self.rows.values())

    def differences(self, other: Census) -> list[str]:
        """What `other` lacks or has differently, in words (empty when they agree)."""
        said = []
        for table in sorted(self.rows.keys() | other.rows.keys()):
            mine, theirs = self.rows.get(table), other.rows.get(table)
            if mine != theirs:
                said.append(f"{table}: {mine} rows against {theirs}")
        if (self.ledger_ids, self.ledger_digest) != (other.ledger_ids, other.ledger_digest):
            said.append(
                f"the ledger's message ids differ ({self.ledger_ids} against {other.ledger_ids})"
            )
        return said


async def census(silo: Silo, settings: Settings) -> Census:
    """Count the silo, in one snapshot."""
    async with one_connection(silo.url, settings) as conn:
        await conn.execute(text("set transaction isolation level repeatable read read only"))
        await set_role(conn, silo.owner)
        counted = await _count(conn)
        await conn.rollback()
    return counted


async def _count(conn: AsyncConnection) -> Census:
    tables = (
        (
            await conn.execute(
                text("select tablename from pg_tables where schemaname = 'public' order by 1")
            )
        )
        .scalars()
        .all()
    )
    rows = {}
    for table in tables:
        rows[table] = (
            await conn.execute(text(f"select count(*) from {ident(table)}"))
        ).scalar_one()
    ledger_ids, ledger_digest = 0, ""
    if LEDGER in rows:
        found = (
            await conn.execute(
                text(
                    "select count(*), coalesce(md5(string_agg(message_id::text, ',' "
                    f"order by message_id)), '') from {ident(LEDGER)}"
                )
            )
        ).one()
        ledger_ids, ledger_digest = found[0], found[1]
    return Census(rows, ledger_ids, ledger_digest)
