"""Placements as an operator sees them: what each server holds and whether it answers
(`placement list`), where a new tenant goes (`tenant create` without `--placement`), and
emptying a server one tenant at a time (`placement drain`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from sqlalchemy import text

from services.core import placing
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.domain import TenantStatus
from services.core.errors import InvalidArgument, ProvisioningError
from services.core.pgadmin import MAINTENANCE_DATABASE
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.ops import moves, records
from services.ops.tenants import registry_connection

log = structlog.get_logger(__name__)


@dataclass
class PlacementView:
    """One placement: its tenants, their databases' size on disk, and whether it answers."""

    placement: registry.Placement
    tenants: list[str] = field(default_factory=list)
    incoming: list[str] = field(default_factory=list)  # tenants moving to it
    database_bytes: int | None = None
    error: str | None = None  # why the provisioner cannot log in there, when it cannot

    @property
    def reachable(self) -> bool:
        """Whether the provisioner logged in there just now."""
        return self.error is None

    @property
    def load(self) -> placing.Load:
        """The placement as the placing rule sees it."""
        return placing.Load(
            self.placement.name,
            len(self.tenants) + len(self.incoming),
            self.reachable,
            self.placement.draining,
        )

    def as_json(self) -> dict[str, object]:
        """The placement as `placement list --json` shows it."""
        p = self.placement
        return {
            "name": p.name,
            "host": p.host,
            "port": p.port,
            "note": p.note,
            "draining": p.draining,
            "tenants": self.tenants,
            "incoming": self.incoming,
            "database_bytes": self.database_bytes,
            "reachable": self.reachable,
            "error": self.error,
        }


async def survey(settings: Settings) -> list[PlacementView]:
    """Every placement with its tenants, and each server asked at once for their sizes."""
    async with registry_connection(settings) as conn:
        placements = await records.list_placements(conn)
        tenants = await registry.list_tenants(conn)
    views = {p.name: PlacementView(p) for p in placements}
    databases: dict[str, list[str]] = {p.name: [] for p in placements}
    for tenant in tenants:
        if tenant.placement is not None and tenant.placement.name in views:
            views[tenant.placement.name].tenants.append(tenant.slug)
            databases[tenant.placement.name].append(tenant.db_name)
        if tenant.move is not None and tenant.move.step.paused and tenant.move.target in views:
            views[tenant.move.target].incoming.append(tenant.slug)

    async def ask(view: PlacementView) -> None:
        server = ServerAddress(view.placement.host, view.placement.port)
        url = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
        try:
            async with one_connection(url, settings) as conn:
                found = await conn.execute(
                    text(
                        "select coalesce(sum(pg_database_size(datname)), 0) from pg_database "
                        "where datname = any(:names)"
                    ),
                    {"names": databases[view.placement.name]},
                )
                view.database_bytes = int(found.scalar_one())
        except Exception as exc:  # one server down is reported, not fatal
            view.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    await asyncio.gather(*(ask(v) for v in views.values()))
    return list(views.values())


async def for_new_tenant(settings: Settings, *, excluding: str | None = None) -> str:
    """The placement a new (or drained) tenant goes to, by the rule in `placing.choose`."""
    views = await survey(settings)
    chosen = placing.choose((v.load for v in views), excluding=excluding)
    if chosen is None:
        said = "; ".join(
            f"{v.placement.name}: "
            + ("draining" if v.placement.draining else v.error or "excluded")
            for v in views
        )
        raise ProvisioningError(
            "-", f"no placement can take a tenant now ({said or 'none recorded'})"
        )
    return chosen


async def set_draining(settings: Settings, name: str, draining: bool) -> registry.Placement:
    """Mark a placement as being drained, or not."""
    async with registry_connection(settings) as conn:
        placement = await records.get_placement(conn, name)
        if placement is None:
            known = ", ".join(p.name for p in await records.list_placements(conn))
            raise InvalidArgument(f"unknown placement {name!r}; known placements: {known}")
        await records.set_draining(conn, name, draining)
        await conn.commit()
        updated = await records.get_placement(conn, name)
    assert updated is not None
    return updated


@dataclass(frozen=True)
class Drained:
    """What a drain did: the tenants it moved (to where), and those it had to leave."""

    moved: dict[str, str]
    left: dict[str, str]


async def drain(settings: Settings, name: str, *, to: str | None, say: moves.Say) -> Drained:
    """Move every tenant off the placement, one at a time: those already moving off it first
    (resumed), then the rest, each to `to` or the placement the rule chooses. Running it again
    resumes: the placement stays marked as draining."""
    await set_draining(settings, name, True)
    moved: dict[str, str] = {}
    left: dict[str, str] = {}
    while True:
        async with registry_connection(settings) as conn:
            tenants = await registry.list_tenants(conn)
        resuming = [t for t in tenants if t.move is not None and t.move.source == name]
        staying = [
            t
            for t in tenants
            if t.placement is not None
            and t.placement.name == name
            and t.move is None
            and t.slug not in left
        ]
        if resuming:
            tenant = resuming[0]
            assert tenant.move is not None
            target = tenant.move.target
        elif staying:
            tenant = staying[0]
            if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
                left[tenant.slug] = f"{tenant.status}: finish it first"
                continue
            target = to or await for_new_tenant(settings, excluding=name)
        else:
            break
        if target == name:
            raise InvalidArgument(f"--to {to!r} is the placement being drained")
        say(None, f"draining {name}: tenant {tenant.slug} to {target}")
        await moves.move_tenant(
            settings,
            tenant.slug,
            to=None if tenant.move is not None else target,
            keep_source=False,
            say=say,
        )
        moved[tenant.slug] = target
    log.info("placement.drained", placement=name, moved=moved, left=left)
    return Drained(moved, left)
