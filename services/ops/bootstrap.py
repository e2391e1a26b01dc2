"""`siloflow bootstrap`: the one step that uses a superuser. It creates the least-privilege
provisioner role and the control-plane databases; everything after runs as the provisioner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db import asyncpg_url, one_connection, provisioner_url, server_of
from services.core.errors import InvalidArgument, ProvisioningError, SiloflowError
from services.core.hostkeys import ensure_keyring
from services.core.names import Names
from services.core.pgadmin import (
    database_exists,
    end_login,
    ensure_database,
    ident,
    is_superuser,
    literal,
)
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.ops import records, tenants, topology
from services.ops.broker_users import ensure_users, remove_users

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass
class BootstrapReport:
    """What bootstrap found and did, for the CLI to print."""

    provisioner_role: str
    databases: list[str]
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    host_key_file: str | None = None


def _same_server(a: str, b: str) -> bool:
    sa, sb = server_of(a), server_of(b)
    hosts_match = sa.host == sb.host or (sa.host in _LOOPBACK and sb.host in _LOOPBACK)
    return hosts_match and sa.port == sb.port


def _check_url(admin_dsn: str) -> None:
    parts = urlsplit(admin_dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise InvalidArgument(
            f"--admin-dsn {admin_dsn!r} is not a postgresql://user@host:port/database URL"
        )


def check_admin_dsn(admin_dsn: str, settings: Settings) -> None:
    """Refuse an admin DSN that is not a PostgreSQL URL of the registry's server."""
    _check_url(admin_dsn)
    parts = urlsplit(admin_dsn)
    if not _same_server(admin_dsn, settings.registry_url):
        registry = server_of(settings.registry_url)
        raise InvalidArgument(
            f"--admin-dsn points at {parts.hostname}:{parts.port or 5432} but the registry "
            f"(SILOFLOW_REGISTRY_DSN) lives on {registry.host}:{registry.port}; bootstrap the "
            "registry's server"
        )


async def bootstrap(settings: Settings, admin_dsn: str) -> BootstrapReport:
    """Create (or bring up to date) the provisioner role and the registry and shared databases."""
    check_admin_dsn(admin_dsn, settings)
    names = Names(settings.namespace)
    role = names.provisioner_role
    password = provisioner_url(settings).password
    databases = [settings.registry_database]
    if settings.multitenant:
        databases.append(names.shared_database)
    report = BootstrapReport(provisioner_role=role, databases=databases)

    async with one_connection(asyncpg_url(admin_dsn), settings, autocommit=True) as conn:
        await _ensure_provisioner(conn, role, password, report.created, report.kept)
        for database in databases:
            existed = await database_exists(conn, database)
            await ensure_database(conn, database, owner=role)
            await conn.execute(text(f"alter database {ident(database)} owner to {ident(role)}"))
            (report.kept if existed else report.created).append(f"database {database}")
    if settings.host_key_secrets is None:
        report.host_key_file = str(settings.host_key_file)
        made = ensure_keyring(settings)
        (report.created if made else report.kept).append(f"host key file {settings.host_key_file}")
    # The broker's least-privilege users, one per role (as the broker administrator the
    # configured URLs name): from here on no siloflow process needs that administrator.
    users = await ensure_users(settings)
    report.created += [f"broker user {user}" for user in users.created]
    report.kept += [f"broker user {user} (rights and password reset)" for user in users.updated]
    if users.password_file is not None:
        report.created.append(f"broker password file {users.password_file}")
    return report


async def _ensure_provisioner(
    conn: AsyncConnection,
    role: str,
    password: str | None,
    created: list[str],
    kept: list[str],
) -> None:
    """Create (or bring up to date) the provisioner role on the server `conn` is a superuser of."""
    if not await is_superuser(conn):
        raise ProvisioningError(
            "-", "--admin-dsn must be a superuser: it creates the provisioner role"
        )
    # The provisioner may create databases and roles, and nothing more: never superuser,
    # never replication, never bypassing row security.
    attributes = "login createdb createrole nosuperuser noreplication nobypassrls"
    if password is not None:
        attributes += f" password {literal(password)}"
    exists = await conn.execute(text("select 1 from pg_roles where rolname = :r"), {"r": role})
    if exists.first() is None:
        await conn.execute(text(f"create role {ident(role)} {attributes}"))
        created.append(f"role {role}")
    else:
        await conn.execute(text(f"alter role {ident(role)} {attributes}"))
        kept.append(f"role {role}")
    # Revoking a login leaves its sessions running: the provisioner ends them itself
    # (pg_terminate_backend). It may already grant itself any non-superuser role, so this
    # adds nothing it could not take.
    await conn.execute(text(f"grant pg_signal_backend to {ident(role)}"))


async def prepare_server(settings: Settings, admin_dsn: str, host: str, port: int) -> list[str]:
    """Prepare another PostgreSQL server (a placement's) for tenant databases: the provisioner
    role, as bootstrap creates it on the registry's. The superuser DSN is used here and never
    stored. Returns what was created or brought up to date."""
    _check_url(admin_dsn)
    given = server_of(admin_dsn)
    if not _same_server(admin_dsn, f"postgresql://x@{host}:{port}/x"):
        raise InvalidArgument(
            f"--admin-dsn points at {given.host}:{given.port} but the placement is on "
            f"{host}:{port}: give that server's superuser DSN"
        )
    role = Names(settings.namespace).provisioner_role
    created: list[str] = []
    kept: list[str] = []
    async with one_connection(asyncpg_url(admin_dsn), settings, autocommit=True) as conn:
        await _ensure_provisioner(conn, role, provisioner_url(settings).password, created, kept)
    return [f"created {c} on {host}:{port}" for c in created] + [
        f"brought up to date {k} on {host}:{port}" for k in kept
    ]


async def teardown(settings: Settings, *admin_dsns: str) -> list[str]:
    """Undo bootstrap and everything after it: every tenant (database, role, queue), the
    broker topology and policies, the control-plane databases and the provisioner role, on the
    registry's server and on every placement's (one superuser DSN for each server)."""
    if not admin_dsns:
        raise InvalidArgument("--admin-dsn is required: the registry's server's superuser DSN")
    for dsn in admin_dsns:
        _check_url(dsn)
    registry_dsn = next((d for d in admin_dsns if _same_server(d, settings.registry_url)), None)
    if registry_dsn is None:
        check_admin_dsn(admin_dsns[0], settings)  # raises, naming the registry's server
    assert registry_dsn is not None
    names = Names(settings.namespace)
    try:
        async with tenants.registry_connection(settings) as conn:
            slugs = [t.slug for t in await registry.list_tenants(conn)]
            placements = await records.list_placements(conn)
    except SiloflowError:
        # Never migrated, or already half torn down: nothing registered to delete.
        slugs, placements = [], []
    elsewhere = _placement_servers(settings, placements, admin_dsns)
    # The superusers are needed last (the databases, the roles): reach each first, so a
    # teardown that cannot finish changes nothing.
    for dsn in [registry_dsn, *elsewhere.values()]:
        async with one_connection(asyncpg_url(dsn), settings, autocommit=True) as conn:
            await conn.execute(text("select 1"))
    removed: list[str] = []
    for slug in slugs:
        if settings.multitenant:
            await tenants.delete_tenant(settings, slug)
            removed.append(
                f"tenant {slug} (database {names.tenant_database(slug)}, role "
                f"{names.tenant_owner_role(slug)}, queue {names.tenant_queue(slug)})"
            )
        else:
            await tenants.tenant_queue(settings, slug, declare=False)
            removed.append(f"tenant {slug} (queue {names.tenant_queue(slug)})")
    removed += await topology.remove_topology(settings)
    removed += await remove_users(settings)
    async with one_connection(asyncpg_url(registry_dsn), settings, autocommit=True) as conn:
        databases = [settings.registry_database]
        if settings.multitenant:
            databases.append(names.shared_database)
        for database in databases:
            if await database_exists(conn, database):
                await conn.execute(text(f"drop database {ident(database)} with (force)"))
                removed.append(f"database {database}")
        removed += await _remove_roles(conn, names, "")
    for (host, port), dsn in elsewhere.items():
        async with one_connection(asyncpg_url(dsn), settings, autocommit=True) as conn:
            removed += await _remove_roles(conn, names, f" on {host}:{port}")
    if settings.host_key_secrets is None and settings.host_key_file.exists():
        settings.host_key_file.unlink()
        removed.append(f"host key file {settings.host_key_file}")
    state = settings.host_key_file.parent  # the namespace's state directory, bootstrap's
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()
        removed.append(f"state directory {state}")
    return removed


def _placement_servers(
    settings: Settings, placements: Sequence[registry.Placement], admin_dsns: Sequence[str]
) -> dict[tuple[str, int], str]:
    """Each placement server other than the registry's, with the superuser DSN given for it.
    Refuses (before anything changes) a server without one, and a DSN of no server of this
    deployment."""
    servers: dict[tuple[str, int], list[str]] = {}
    for p in placements:
        address = f"postgresql://x@{p.host}:{p.port}/x"
        if not _same_server(address, settings.registry_url):
            servers.setdefault((p.host, p.port), []).append(p.name)
    given: dict[tuple[str, int], str] = {}
    missing = []
    for (host, port), named in servers.items():
        dsn = next(
            (d for d in admin_dsns if _same_server(d, f"postgresql://x@{host}:{port}/x")), None
        )
        if dsn is None:
            missing.append(f"{', '.join(named)} on {host}:{port}")
        else:
            given[(host, port)] = dsn
    if missing:
        raise InvalidArgument(
            f"placement {'; '.join(missing)}: give that server's superuser DSN as well "
            "(--admin-dsn is repeatable): teardown removes the provisioner role there too"
        )
    for dsn in admin_dsns:
        if not _same_server(dsn, settings.registry_url) and dsn not in given.values():
            at = server_of(dsn)
            raise InvalidArgument(
                f"--admin-dsn points at {at.host}:{at.port}, which is neither the registry's "
                "server nor a placement's"
            )
    return given


async def _remove_roles(conn: AsyncConnection, names: Names, where: str) -> list[str]:
    """The provisioner role on the server `conn` is a superuser of, after the owner roles and any
    login or OpenBao broker role a lost process left behind."""
    removed: list[str] = []
    role = names.provisioner_role
    found = await conn.execute(text("select 1 from pg_roles where rolname = :r"), {"r": role})
    if found.first() is None:
        return removed
    leftovers = (
        await conn.execute(
            text(
                "select rolname from pg_roles where starts_with(rolname, :owner) "
                "or starts_with(rolname, :login) or starts_with(rolname, :bao) "
                "or starts_with(rolname, :reader)"
            ),
            {
                "owner": names.tenant_owner_role(""),
                "reader": names.tenant_reader_role(""),
                "login": names.login_prefix,
                "bao": names.tenant_broker_role(""),
            },
        )
    ).scalars()
    for leftover in sorted(leftovers, key=lambda r: r.startswith(names.login_prefix)):
        await end_login(conn, leftover)
        removed.append(f"role {leftover}{where}")
    await conn.execute(text(f"drop role {ident(role)}"))
    removed.append(f"role {role}{where}")
    return removed
