"""`siloflow migrate`: the registry and shared chains once, then the tenant chain in every tenant
database, one failure never stopping the others; each tenant's outcome is recorded in the
registry. `plan` answers `--status` and `--dry-run` without changing anything."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy import URL

from services.core.broker.connection import connect
from services.core.broker.users import BrokerRole
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url, server_of
from services.core.domain import TenantStatus
from services.core.errors import DatabaseUnavailable
from services.core.names import DEFAULT_PLACEMENT, Names
from services.core.pgadmin import set_role
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.ops import chains as migrator
from services.ops import records, topology
from services.ops.tenants import ensure_default_tenant, ensure_reader, registry_connection

log = structlog.get_logger(__name__)

MIGRATABLE_STATUSES = (TenantStatus.ACTIVE, TenantStatus.SUSPENDED)


@dataclass
class Target:
    """One database's place in a migration run."""

    chain: str
    label: str
    database: str
    current: str | None = None
    pending: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    cause: BaseException | None = field(default=None, repr=False)  # what `error` says

    @property
    def head(self) -> str:
        """The revision the target's chain is at when fully migrated."""
        return migrator.head_revision(self.chain)

    def as_json(self) -> dict[str, object]:
        """The target as `migrate --json` shows it."""
        return {
            "chain": self.chain,
            "target": self.label,
            "database": self.database,
            "current": self.current,
            "head": self.head,
            "pending": self.pending,
            "applied": self.applied,
            "error": self.error,
            "skipped": self.skipped,
        }


@dataclass
class MigrationReport:
    """Every database's migration: the control plane's, then each tenant's."""

    targets: list[Target] = field(default_factory=list)

    @property
    def failed(self) -> list[Target]:
        """The targets that failed."""
        return [t for t in self.targets if t.error is not None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


async def _migrate_one(
    target: Target, url: URL, settings: Settings, *, role: str | None, apply: bool
) -> None:
    try:
        async with one_connection(url, settings) as conn:
            if role is not None:
                await set_role(conn, role)
            target.current = await migrator.current_revision(conn, target.chain)
            target.pending = migrator.pending_revisions(target.chain, target.current)
            if apply and target.pending:
                target.current = await migrator.upgrade(conn, target.chain)
                target.applied, target.pending = target.pending, []
    except Exception as exc:  # one database's failure is reported, never fatal to the run
        target.error = _first_line(exc)
        target.cause = exc
        # Said in the command's table and its last line; the log line is for -v.
        log.info(
            "migrate.failed", target=target.label, database=target.database, error=target.error
        )


async def _ensure_broker_topology(settings: Settings, tenant_slugs: list[str]) -> None:
    """The broker's side of the control plane: exchanges, the fixed queues, the tenants'
    queues and their bindings, the policies (as the `topology` broker user)."""
    connection = await connect(settings, name="migrate", role=BrokerRole.TOPOLOGY)
    try:
        await topology.ensure_topology(settings, connection, tenant_slugs)  # logs a kept queue
    finally:
        await connection.close()


async def plan(settings: Settings) -> MigrationReport:
    """What `migrate` would do, changing nothing."""
    return await _run(settings, apply=False)


async def migrate(settings: Settings) -> MigrationReport:
    """Bring every database to its chain's head."""
    return await _run(settings, apply=True)


async def _run(settings: Settings, *, apply: bool) -> MigrationReport:
    names = Names(settings.namespace)
    report = MigrationReport()
    prov = provisioner_url(settings)
    control = [Target("registry", "registry", settings.registry_database)]
    control.append(Target("shared", "shared", settings.shared_database))
    for target in control:
        report.targets.append(target)
        await _migrate_one(
            target, prov.set(database=target.database), settings, role=None, apply=apply
        )
    if control[0].error is not None:
        raise DatabaseUnavailable(
            f"the registry database {settings.registry_database}",
            f"{control[0].error} (has `siloflow bootstrap` run?)",
        ) from control[0].cause  # the cause says which setting to correct (diagnosis)
    if control[0].current is None:  # a dry run before the first migrate: no tenants to list
        return report

    if apply:
        async with registry_connection(settings) as conn:
            active = [t.slug for t in await registry.active_tenants(conn)]
        await _ensure_broker_topology(settings, active)
        server = server_of(settings.registry_url)
        async with registry_connection(settings) as conn:
            await records.ensure_placement(
                conn,
                registry.Placement(
                    DEFAULT_PLACEMENT, server.host, server.port, "the registry's own server"
                ),
            )
            await conn.commit()
        if not settings.multitenant:
            await ensure_default_tenant(settings)

    async with registry_connection(settings) as conn:
        tenants = await registry.list_tenants(conn)
    for tenant in tenants:
        target = Target("tenant", f"tenant {tenant.slug}", tenant.db_name)
        report.targets.append(target)
        if tenant.status not in MIGRATABLE_STATUSES:
            finish = "create" if tenant.status == TenantStatus.PROVISIONING else "delete"
            target.skipped = (
                f"{tenant.status}: finish it with `siloflow tenant {finish} {tenant.slug}`"
            )
            continue
        if tenant.move is not None and tenant.move.step.paused:
            # Its database is being copied: a change now would not be in the copy, or would
            # differ from it. The copy has the source's revision; migrate after the move.
            target.skipped = (
                f"moving to {tenant.move.target} ({tenant.move.step}): run migrate again "
                f"once `siloflow tenant move {tenant.slug}` has finished"
            )
            continue
        if tenant.placement is None:
            target.error = "tenant has no placement"
        else:
            server = ServerAddress(tenant.placement.host, tenant.placement.port)
            url = at_server(prov, server, tenant.db_name)
            role = names.tenant_owner_role(tenant.slug)
            await _migrate_one(target, url, settings, role=role, apply=apply)
            if apply and target.error is None:
                # Tenants made before the reader role existed get it; new tables get its grant.
                await ensure_reader(settings, server, tenant.db_name, tenant.slug)
        if apply:
            async with registry_connection(settings) as conn:
                await records.record_migration(
                    conn, tenant.id, revision=target.current, error=target.error
                )
                await conn.commit()
    return report
