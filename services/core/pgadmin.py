"""Idempotent PostgreSQL DDL for roles and databases. Names come from `names.py` (already safe),
and are quoted anyway; DDL takes no bind parameters, so literals are quoted here too."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Roles are cluster-wide, so role DDL on a placement's server runs from this database, which every
# PostgreSQL server has.
MAINTENANCE_DATABASE = "postgres"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A quoted SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1)."""
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


async def role_exists(conn: AsyncConnection, role: str) -> bool:
    """Whether the role exists."""
    result = await conn.execute(text("select 1 from pg_roles where rolname = :r"), {"r": role})
    return result.first() is not None


async def database_exists(conn: AsyncConnection, database: str) -> bool:
    """Whether the database exists."""
    result = await conn.execute(
        text("select 1 from pg_database where datname = :d"), {"d": database}
    )
    return result.first() is not None


async def is_superuser(conn: AsyncConnection) -> bool:
    """Whether the connection's user is a superuser."""
    result = await conn.execute(text("select rolsuper from pg_roles where rolname = current_user"))
    return bool(result.scalar())


async def ensure_owner_role(conn: AsyncConnection, role: str) -> bool:
    """A NOLOGIN role the current user is a member of (so it may create databases owned by it and
    `SET ROLE` to it). Returns True when it was created."""
    created = False
    if not await role_exists(conn, role):
        await conn.execute(text(f"create role {ident(role)} nologin"))
        created = True
    member = await conn.execute(text("select pg_has_role(current_user, :r, 'MEMBER')"), {"r": role})
    if not member.scalar():
        await conn.execute(text(f"grant {ident(role)} to current_user"))
    return created


async def ensure_database(conn: AsyncConnection, database: str, owner: str) -> bool:
    """Create the database owned by `owner` unless it exists, and take CONNECT away from PUBLIC.
    Needs an autocommit connection. Returns True when it was created."""
    created = False
    if not await database_exists(conn, database):
        await conn.execute(text(f"create database {ident(database)} owner {ident(owner)}"))
        created = True
    await conn.execute(text(f"revoke connect, temporary on database {ident(database)} from public"))
    return created


async def drop_database(conn: AsyncConnection, database: str) -> None:
    """Drop the database, ending the sessions in it. Needs an autocommit connection."""
    await conn.execute(text(f"drop database if exists {ident(database)} with (force)"))


async def drop_role(conn: AsyncConnection, role: str) -> None:
    """Drop the role if it exists."""
    await conn.execute(text(f"drop role if exists {ident(role)}"))


async def set_role(conn: AsyncConnection, role: str) -> None:
    """Act as `role` for the rest of the session, so what is created is owned by it."""
    await conn.execute(text(f"set role {ident(role)}"))


async def create_login(
    conn: AsyncConnection,
    login: str,
    password: str,
    *,
    valid_for_s: float,
    member_of: list[str],
) -> None:
    """A short-lived LOGIN role in the given roles, expiring `valid_for_s` from the server's
    now. (The provisioner ends its sessions later through pg_signal_backend, not by being a
    member of it: membership would put the provisioner in the login's groups too.)"""
    expires = (
        await conn.execute(
            text(
                "select to_char((now() + make_interval(secs => :s)) at time zone 'UTC', "
                '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\')'
            ),
            {"s": valid_for_s},
        )
    ).scalar_one()
    groups = ", ".join(ident(r) for r in member_of)
    await conn.execute(
        text(
            f"create role {ident(login)} login password {literal(password)} "
            f"valid until {literal(expires)} in role {groups}"
        )
    )


async def member_logins(
    conn: AsyncConnection, owner: str, prefix: str, *, expired_only: bool = False
) -> list[str]:
    """The logins (named `prefix...`) that are members of `owner`: a tenant's logins."""
    query = """
        select r.rolname from pg_roles r
        join pg_auth_members m on m.member = r.oid
        join pg_roles o on o.oid = m.roleid
        where o.rolname = :owner and r.rolcanlogin and starts_with(r.rolname, :prefix)
    """
    if expired_only:
        query += " and r.rolvaliduntil < now()"
    rows = await conn.execute(text(query), {"owner": owner, "prefix": prefix})
    return list(rows.scalars())


async def end_login(conn: AsyncConnection, login: str) -> None:
    """Drop a login after ending its sessions (dropping a role leaves them running)."""
    if not await role_exists(conn, login):
        return
    await conn.execute(text(f"alter role {ident(login)} nologin"))
    await conn.execute(
        text("select pg_terminate_backend(pid) from pg_stat_activity where usename = :u"),
        {"u": login},
    )
    await conn.execute(text(f"drop role if exists {ident(login)}"))
