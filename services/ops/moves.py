"""`siloflow tenant move`: a tenant's database moved to another placement while its agents keep
reporting. Its queue keeps taking reports; its workers stop consuming it; the source database is
fenced (closed to the tenant's logins, so nothing can commit there from then on, whoever still
tries); copied with pg_dump/pg_restore; verified; the registry switches the tenant's placement in
one transaction; workers resume on the target; the fenced source is dropped (or kept).

Every step is recorded in `registry_tenant_moves` before it runs and is safe to run again, so a
crash of anything at any point leaves a move that `tenant move SLUG` resumes or, until the
switch, `tenant move SLUG --abort` rolls back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import delete, insert, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.broker.users import BrokerRole, management_url
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.diagnosis import explain
from services.core.domain import MoveStep, TenantStatus
from services.core.errors import (
    InvalidArgument,
    ManagementError,
    MoveInterrupted,
    ProvisioningError,
    TenantNotFound,
)
from services.core.names import Names
from services.core.pgadmin import (
    MAINTENANCE_DATABASE,
    database_exists,
    drop_database,
    drop_role,
    ensure_database,
    ensure_owner_role,
    ident,
    set_role,
)
from services.core.registry import queries as registry
from services.core.registry.models import tenant_moves, tenants
from services.core.settings import Settings
from services.ops import dumps, records
from services.ops.credentials import credential_admin
from services.ops.management import Management
from services.ops.tenants import ensure_reader, registry_connection, require_multitenant

log = structlog.get_logger(__name__)

Say = Callable[[MoveStep | None, str], None]


@dataclass(frozen=True)
class MoveResult:
    """A finished move: where the tenant is now, and the source database if it was kept."""

    tenant: str
    source: registry.Placement
    target: registry.Placement
    kept_source: str | None
    copied_bytes: int | None
    rows: int | None


def _server(placement: registry.Placement) -> ServerAddress:
    return ServerAddress(placement.host, placement.port)


def _same_server(a: registry.Placement, b: registry.Placement) -> bool:
    loopback = {"localhost", "127.0.0.1", "::1"}
    same_host = a.host == b.host or (a.host in loopback and b.host in loopback)
    return same_host and a.port == b.port


class _Move:
    """One tenant's move, step by step, as its registry row says."""

    def __init__(
        self,
        settings: Settings,
        record: registry.TenantRecord,
        source: registry.Placement,
        target: registry.Placement,
        say: Say,
    ) -> None:
        self.settings = settings
        self.record = record
        self.source = source
        self.target = target
        self.say = say
        names = Names(settings.namespace)
        self.owner = names.tenant_owner_role(record.slug)
        self.reader = names.tenant_reader_role(record.slug)
        self.queue = names.tenant_queue(record.slug)
        self.database = record.db_name
        self.copied_bytes: int | None = None
        self.rows: int | None = None

    def silo(self, placement: registry.Placement) -> dumps.Silo:
        url = at_server(provisioner_url(self.settings), _server(placement), self.database)
        return dumps.Silo(self.record.slug, url, self.owner)

    async def record_step(self, step: MoveStep, progress: str | None = None) -> None:
        async with registry_connection(self.settings) as conn:
            await conn.execute(
                update(tenant_moves)
                .where(tenant_moves.c.tenant_id == self.record.id)
                .values(step=step, progress=progress, updated_at=text("now()"))
            )
            await conn.commit()

    async def queue_depth(self) -> str:
        """The tenant's queue, as the console shows it (best effort: the move does not need it)."""
        try:
            async with Management(management_url(self.settings, BrokerRole.STATUS)) as api:
                queue = await api.queue(self.settings.vhost, self.queue)
        except ManagementError:
            return "queue depth unknown"
        if queue is None:
            return "queue missing"
        return f"queue {self.queue}: {queue.get('messages', 0)} waiting"

    # -- the steps, each safe to run again ------------------------------------------------------

    async def fence(self) -> None:
        """Close the source database to the tenant's logins and end their sessions: from here
        nothing commits there, whatever a worker still believes. The provisioner keeps its way
        in (to copy it)."""
        url = at_server(provisioner_url(self.settings), _server(self.source), MAINTENANCE_DATABASE)
        async with one_connection(url, self.settings, autocommit=True) as conn:
            if not await database_exists(conn, self.database):
                raise ProvisioningError(
                    self.record.slug,
                    f"database {self.database} is not on {self.source.host}:{self.source.port} "
                    f"(placement {self.source.name}): nothing to move",
                )
            await _fence(conn, self.database, self.owner, closed=True)
            ended = await _end_sessions(conn, self.database)
        revoked = await credential_admin(self.settings).unregister(
            self.record.slug, _server(self.source), self.database
        )
        self.say(
            MoveStep.FENCING,
            f"source {self.database} on {self.source.host}:{self.source.port} closed to the "
            f"tenant's logins ({ended} sessions ended, {len(revoked)} logins revoked); "
            f"{await self.queue_depth()}",
        )

    async def copy(self) -> None:
        """A fresh, empty database on the target, and the source restored into it."""
        url = at_server(provisioner_url(self.settings), _server(self.target), MAINTENANCE_DATABASE)
        async with one_connection(url, self.settings, autocommit=True) as conn:
            await ensure_owner_role(conn, self.owner)
            await drop_database(conn, self.database)  # a copy an earlier try left: ours
            await ensure_database(conn, self.database, self.owner)
        reported = [0]

        def progress(copied: int) -> None:
            if copied - reported[0] >= 16 << 20:
                reported[0] = copied
                self.say(MoveStep.COPYING, f"{copied / 2**20:,.0f} MiB copied")

        self.copied_bytes = await dumps.copy(
            self.silo(self.source), self.silo(self.target), progress
        )
        # A dump is restored without its grants: the reader's, again.
        await ensure_reader(
            settings=self.settings,
            server=_server(self.target),
            database=self.database,
            slug=self.record.slug,
        )
        self.say(
            MoveStep.COPYING,
            f"{self.copied_bytes / 2**20:,.1f} MiB copied to {self.target.host}:"
            f"{self.target.port}; {await self.queue_depth()}",
        )

    async def verify(self) -> None:
        """Every table's row count and the ledger's message ids, on both sides."""
        source = await dumps.census(self.silo(self.source), self.settings)
        target = await dumps.census(self.silo(self.target), self.settings)
        differences = source.differences(target)
        if differences:
            await self.record_step(MoveStep.COPYING, "verification failed")
            raise ProvisioningError(
                self.record.slug,
                "the copy does not match its source: "
                + "; ".join(differences[:5])
                + f": run `siloflow tenant move {self.record.slug}` to copy it again, or "
                "`--abort`",
            )
        self.rows = source.total_rows
        self.say(
            MoveStep.VERIFYING,
            f"{len(source.rows)} tables, {source.total_rows:,} rows and {source.ledger_ids:,} "
            "ledger ids match",
        )

    async def switch(self) -> None:
        """Make logins issuable on the target, then point the tenant at it and mark the move
        switched, in one registry transaction: its workers resume there."""
        await credential_admin(self.settings).register(
            self.record.slug, _server(self.target), self.database
        )
        async with registry_connection(self.settings) as conn:
            await conn.execute(
                update(tenants)
                .where(tenants.c.id == self.record.id)
                .values(placement=self.target.name, updated_at=text("now()"))
            )
            await conn.execute(
                update(tenant_moves)
                .where(tenant_moves.c.tenant_id == self.record.id)
                .values(step=MoveStep.SWITCHED, progress=None, updated_at=text("now()"))
            )
            await conn.commit()
        self.say(
            MoveStep.SWITCHING,
            f"tenant {self.record.slug} now on placement {self.target.name}; its workers resume "
            f"there; {await self.queue_depth()}",
        )

    async def finish(self, keep_source: bool) -> str | None:
        """Drop the fenced source (or keep it, fenced), and forget the move."""
        kept = None
        if keep_source:
            kept = f"{self.database} on {self.source.host}:{self.source.port}"
        else:
            url = at_server(
                provisioner_url(self.settings), _server(self.source), MAINTENANCE_DATABASE
            )
            async with one_connection(url, self.settings, autocommit=True) as conn:
                await drop_database(conn, self.database)
                await drop_role(conn, self.owner)
                await drop_role(conn, self.reader)
        async with registry_connection(self.settings) as conn:
            await conn.execute(
                delete(tenant_moves).where(tenant_moves.c.tenant_id == self.record.id)
            )
            await conn.commit()
        self.say(
            MoveStep.SWITCHED,
            f"source kept, closed to the tenant's logins: {kept}"
            if kept
            else f"source {self.database} dropped from {self.source.host}:{self.source.port}",
        )
        return kept

    async def roll_back(self) -> None:
        """Before the switch: drop the target's copy, reopen the source, forget the move."""
        url = at_server(provisioner_url(self.settings), _server(self.target), MAINTENANCE_DATABASE)
        async with one_connection(url, self.settings, autocommit=True) as conn:
            await drop_database(conn, self.database)
            await drop_role(conn, self.owner)
            await drop_role(conn, self.reader)
        url = at_server(provisioner_url(self.settings), _server(self.source), MAINTENANCE_DATABASE)
        async with one_connection(url, self.settings, autocommit=True) as conn:
            if await database_exists(conn, self.database):
                await _fence(conn, self.database, self.owner, closed=False)
        await credential_admin(self.settings).register(
            self.record.slug, _server(self.source), self.database
        )
        async with registry_connection(self.settings) as conn:
            await conn.execute(
                delete(tenant_moves).where(tenant_moves.c.tenant_id == self.record.id)
            )
            await conn.commit()


async def _fence(conn: AsyncConnection, database: str, owner: str, *, closed: bool) -> None:
    """Close (or reopen) the database to its owner role, and so to every login of the tenant
    (each is a member of it): CONNECT is the one right a login needs that the owner can give up
    without giving up ownership. The provisioner gets (or gives back) a CONNECT of its own."""
    await set_role(conn, owner)
    if closed:
        await conn.execute(
            text(f"revoke connect on database {ident(database)} from {ident(owner)}")
        )
        await conn.execute(text(f"grant connect on database {ident(database)} to session_user"))
    else:
        await conn.execute(text(f"grant connect on database {ident(database)} to {ident(owner)}"))
        await conn.execute(text(f"revoke connect on database {ident(database)} from session_user"))
    await conn.execute(text("reset role"))


async def _end_sessions(conn: AsyncConnection, database: str) -> int:
    """End every other session in the database (workers' pools, a sweeper's)."""
    ended = await conn.execute(
        text(
            "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity "
            "where datname = :d and pid <> pg_backend_pid()"
        ),
        {"d": database},
    )
    return int(ended.scalar_one() or 0)


async def _plan(
    settings: Settings, slug: str, to: str | None, keep_source: bool
) -> tuple[registry.TenantRecord, registry.Placement, registry.Placement, bool, bool]:
    """Check the request against the registry and record the move (or find the one to resume).
    A refusal changes nothing. Returns the tenant, source, target, keep_source, resumed."""
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, slug)
        if record is None:
            raise TenantNotFound(slug)
        if record.move is not None:
            move = record.move
            if to is not None and to != move.target:
                raise InvalidArgument(
                    f"tenant {slug!r} is already moving to {move.target!r} ({move.step}): resume "
                    f"it with `siloflow tenant move {slug}`, or roll it back with `--abort`"
                )
            source = await records.get_placement(conn, move.source)
            target = await records.get_placement(conn, move.target)
            assert source is not None and target is not None  # foreign keys
            return record, source, target, move.keep_source or keep_source, True
        if record.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            raise ProvisioningError(
                slug,
                f"tenant {slug!r} is {record.status}: only an active or suspended tenant moves",
            )
        if to is None:
            raise InvalidArgument(f"tenant {slug!r} is not moving: say where to, with --to")
        target = await records.get_placement(conn, to)
        if target is None:
            known = ", ".join(p.name for p in await records.list_placements(conn))
            raise InvalidArgument(f"unknown placement {to!r}; known placements: {known}")
        source = record.placement
        if source is None:
            raise ProvisioningError(slug, f"tenant {slug!r} has no placement to move from")
        if source.name == target.name:
            raise InvalidArgument(f"tenant {slug!r} is already on placement {to!r}")
        if _same_server(source, target):
            raise InvalidArgument(
                f"placements {source.name!r} and {to!r} are the same server "
                f"({target.host}:{target.port}): nothing to move"
            )
        await _check_target_free(settings, record, target)
        await conn.execute(
            insert(tenant_moves).values(
                tenant_id=record.id,
                source=source.name,
                target=target.name,
                step=MoveStep.FENCING,
                keep_source=keep_source,
            )
        )
        await conn.commit()
        log.info("tenant.move_started", tenant=slug, source=source.name, target=target.name)
        return record, source, target, keep_source, False


async def _check_target_free(
    settings: Settings, record: registry.TenantRecord, target: registry.Placement
) -> None:
    """Refuse a target server that already has a database of the tenant's name: not ours."""
    url = at_server(provisioner_url(settings), _server(target), MAINTENANCE_DATABASE)
    async with one_connection(url, settings) as conn:
        if await database_exists(conn, record.db_name):
            raise ProvisioningError(
                record.slug,
                f"database {record.db_name} already exists on {target.host}:{target.port} "
                f"(placement {target.name}) and no move of this tenant made it: drop it first",
            )


async def move_tenant(
    settings: Settings, slug: str, *, to: str | None, keep_source: bool, say: Say
) -> MoveResult:
    """Move the tenant (or resume its move) to the end."""
    require_multitenant(settings, "tenant move")
    record, source, target, keep_source, resumed = await _plan(settings, slug, to, keep_source)
    step = record.move.step if record.move is not None else MoveStep.FENCING
    if resumed:
        say(None, f"resuming the move of {slug} to {target.name} at step {step}")
    move = _Move(settings, record, source, target, say)
    try:
        if step is MoveStep.FENCING:
            await move.fence()
            step = MoveStep.COPYING
            await move.record_step(step)
        if step is MoveStep.COPYING:
            await move.copy()
            step = MoveStep.VERIFYING
            await move.record_step(step, f"{move.copied_bytes} bytes copied")
        if step is MoveStep.VERIFYING:
            await move.verify()
            step = MoveStep.SWITCHING
            await move.record_step(step, f"{move.rows} rows verified")
        if step is MoveStep.SWITCHING:
            await move.switch()
            step = MoveStep.SWITCHED
        kept = await move.finish(keep_source)
    except Exception as exc:
        # Whatever stopped it, the step is recorded: say where it stopped and how to go on.
        why = explain(exc, settings) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("tenant.move_interrupted", tenant=slug, step=step, error=why)
        raise MoveInterrupted(slug, step, why, abortable=step.paused) from exc
    log.info("tenant.moved", tenant=slug, source=source.name, target=target.name, kept=kept)
    return MoveResult(slug, source, target, kept, move.copied_bytes, move.rows)


async def abort_move(settings: Settings, slug: str, say: Say) -> registry.TenantRecord:
    """Roll a move back: allowed until its switch, after which it can only be finished."""
    require_multitenant(settings, "tenant move --abort")
    async with registry_connection(settings) as conn:
        record = await registry.get_tenant(conn, slug)
        if record is None:
            raise TenantNotFound(slug)
        if record.move is None:
            raise InvalidArgument(f"tenant {slug!r} is not moving: nothing to abort")
        move = record.move
        if not move.step.paused:
            raise InvalidArgument(
                f"tenant {slug!r} already switched to {move.target!r} and commits there: the "
                f"move cannot be rolled back; finish it with `siloflow tenant move {slug}` (and "
                "move it back if need be)"
            )
        source = await records.get_placement(conn, move.source)
        target = await records.get_placement(conn, move.target)
        assert source is not None and target is not None  # foreign keys
    await _Move(settings, record, source, target, say).roll_back()
    say(None, f"move of {slug} to {target.name} rolled back: it commits on {source.name} again")
    log.info("tenant.move_aborted", tenant=slug, source=source.name, target=target.name)
    async with registry_connection(settings) as conn:
        after = await registry.get_tenant(conn, slug)
    assert after is not None
    return after
