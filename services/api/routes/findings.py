"""`/api/v1/tenants/{slug}/findings` and `/compliance`: what the tenant's silo derived and
holds, filtered; read from that silo only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.api.deps import Silo
from services.core.silo import reads

router = APIRouter(prefix="/tenants/{slug}", tags=["findings"])

MAX_PAGE = 1000
CVE = r"^CVE-\d{4}-\d{4,}$"


class Finding(BaseModel):
    """An open finding: a host's package affected by a CVE its catalog knows."""

    id: int
    host_id: uuid.UUID
    package: str
    version: str
    source: str
    cve_id: str
    fixed_version: str | None
    advisory_status: str
    urgency: str
    first_seen: datetime


class FindingPage(BaseModel):
    """One page of open findings; `next` is the `after` of the next page (None: the last)."""

    findings: list[Finding]
    next: int | None


class ComplianceResult(BaseModel):
    """A host's latest result of one rule."""

    host_id: uuid.UUID
    benchmark_id: str
    rule_id: str
    status: str
    severity: str
    sent_at: datetime


@router.get("/findings")
async def list_findings(
    conn: Silo,
    host_id: uuid.UUID | None = None,
    cve: Annotated[str | None, Query(pattern=CVE, max_length=32)] = None,
    urgency: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> FindingPage:
    """The tenant's open findings, filtered by host, CVE or urgency, in pages."""
    rows = await reads.open_findings(
        conn, host_id=host_id, cve_id=cve, urgency=urgency, limit=limit + 1, after=after
    )
    more, rows = len(rows) > limit, rows[:limit]
    page = [Finding.model_validate(r, from_attributes=True) for r in rows]
    return FindingPage(findings=page, next=page[-1].id if more else None)


@router.get("/compliance")
async def list_compliance(
    conn: Silo,
    host_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
) -> list[ComplianceResult]:
    """The tenant's latest compliance results, filtered by host or status."""
    rows = await reads.compliance(conn, host_id=host_id, status=status, limit=limit)
    return [ComplianceResult.model_validate(r, from_attributes=True) for r in rows]
