"""`siloflow findings`: a tenant's vulnerability findings, read through that tenant's own
short-lived login (never a superuser, never another tenant's database)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text

from services.core.db import registry_engine
from services.core.errors import InvalidArgument, TenantNotFound
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.core.silo.databases import RegistryDirectory, TenantDatabases

_FINDINGS = """
    select host_id, package, version, source, source_version, cve_id, fixed_version,
           advisory_status, urgency, catalog_revision, first_seen, resolved_at
    from findings
    where (cast(:host as uuid) is null or host_id = cast(:host as uuid))
      and (cast(:cve as text) is null or cve_id = cast(:cve as text))
      and (cast(:urgency as text) is null or urgency = cast(:urgency as text))
      and (:resolved or resolved_at is null)
    order by host_id, cve_id, package, first_seen
"""
_HOSTS = """
    select count(*) filter (where s.host_id is not null) as evaluated,
           count(*) filter (where s.host_id is not null and s.release is null) as unknown_release,
           coalesce(sum(s.unparsed_versions), 0) as unparsed_versions,
           max(s.catalog_revision) as catalog_revision
    from hosts h left join host_findings_state s on s.host_id = h.id
    where cast(:host as uuid) is null or h.id = cast(:host as uuid)
"""


@dataclass(frozen=True)
class FindingRow:
    """One finding as operators see it."""

    host_id: uuid.UUID
    package: str
    version: str
    source: str
    source_version: str
    cve_id: str
    fixed_version: str | None
    advisory_status: str
    urgency: str
    catalog_revision: int
    first_seen: datetime
    resolved_at: datetime | None

    @property
    def status(self) -> str:
        """`open`, or `resolved` once a later snapshot no longer has it."""
        return "open" if self.resolved_at is None else "resolved"

    def as_json(self) -> dict[str, object]:
        """The finding as `findings --json` prints it."""
        document: dict[str, object] = {**asdict(self), "status": self.status}
        document["host_id"] = str(self.host_id)
        document["first_seen"] = self.first_seen.isoformat()
        document["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        return document


@dataclass(frozen=True)
class Coverage:
    """Which of the tenant's hosts the findings speak for."""

    evaluated: int  # hosts whose packages were matched
    unknown_release: int  # evaluated, but their release is unknown: no findings for them
    unparsed_versions: int  # package versions that did not parse (no finding for those)
    catalog_revision: int | None


async def list_findings(
    settings: Settings,
    slug: str,
    *,
    host: uuid.UUID | None = None,
    cve: str | None = None,
    urgency: str | None = None,
    resolved: bool = False,
) -> tuple[list[FindingRow], Coverage]:
    """The tenant's findings (open only, unless `resolved`), and what they cover."""
    if cve is not None and not cve.startswith("CVE-"):
        raise InvalidArgument(f"--cve {cve!r}: a CVE id looks like CVE-2024-1234")
    engine = registry_engine(settings)
    databases = TenantDatabases(settings, RegistryDirectory(engine))
    try:
        async with engine.connect() as conn:
            tenant = await registry.get_tenant(conn, slug)
        if tenant is None:
            raise TenantNotFound(slug)
        async with databases.begin(tenant) as conn:
            params = {"host": host, "cve": cve, "urgency": urgency, "resolved": resolved}
            rows = (await conn.execute(text(_FINDINGS), params)).all()
            coverage = (await conn.execute(text(_HOSTS), {"host": host})).one()
    finally:
        await databases.close()
        await engine.dispose()
    return [FindingRow(*row) for row in rows], Coverage(*coverage)
