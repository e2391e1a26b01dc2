"""`/api/v1/tenants/{slug}/hosts`: a tenant's hosts, read from its own silo only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from services.api.deps import Silo
from services.api.errors import not_found
from services.core.silo import reads

router = APIRouter(prefix="/tenants/{slug}/hosts", tags=["hosts"])

MAX_PAGE = 500


class Host(BaseModel):
    """A host as listed."""

    model_config = ConfigDict(frozen=True)

    host_id: uuid.UUID
    hostname: str | None
    status: str
    last_seen_at: datetime | None


class HostPage(BaseModel):
    """One page of hosts, by host id; `next` is the `after` of the next page (None: the last)."""

    hosts: list[Host]
    next: uuid.UUID | None


class Hardware(BaseModel):
    """A host's latest hardware report."""

    cpu_vendor: str
    cpu_model: str
    cpu_cores: int
    cpu_threads: int
    memory_mb: int
    disks: list[dict[str, Any]]
    nics: list[dict[str, Any]]
    sent_at: datetime


class Package(BaseModel):
    """One installed package."""

    name: str
    arch: str
    version: str
    source: str | None
    source_version: str | None


class Packages(BaseModel):
    """A host's latest packages snapshot."""

    host_id: uuid.UUID
    manager: str | None
    sent_at: datetime | None
    packages: list[Package]


class HostDetail(Host):
    """A host with what its latest reports said of it."""

    fqdn: str | None
    os_name: str | None
    os_version: str | None
    kernel: str | None
    arch: str | None
    agent_version: str | None
    first_seen_at: datetime
    hardware: Hardware | None


@router.get("")
async def list_hosts(
    conn: Silo,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: uuid.UUID | None = None,
) -> HostPage:
    """The tenant's hosts, `limit` at a time, in host id order (keyset: stable under writes)."""
    rows, following = await reads.host_page(conn, limit=limit, after=after)
    page = [
        Host(host_id=r.id, hostname=r.hostname, status=r.status, last_seen_at=r.last_seen_at)
        for r in rows
    ]
    return HostPage(hosts=page, next=following)


@router.get("/{host_id}")
async def show_host(conn: Silo, host_id: uuid.UUID) -> HostDetail:
    """One host of the tenant (404 for a host of no tenant or of another: the same)."""
    row = await reads.host(conn, host_id)
    if row is None:
        raise not_found("such host")
    hw = await reads.hardware(conn, host_id)
    return HostDetail(
        host_id=row.id,
        hostname=row.hostname,
        status=row.status,
        last_seen_at=row.last_seen_at,
        fqdn=row.fqdn,
        os_name=row.os_name,
        os_version=row.os_version,
        kernel=row.kernel,
        arch=row.arch,
        agent_version=row.agent_version,
        first_seen_at=row.first_seen_at,
        hardware=None
        if hw is None
        else Hardware(
            cpu_vendor=hw.cpu_vendor,
            cpu_model=hw.cpu_model,
            cpu_cores=hw.cpu_cores,
            cpu_threads=hw.cpu_threads,
            memory_mb=hw.memory_mb,
            disks=hw.disks,
            nics=hw.nics,
            sent_at=hw.sent_at,
        ),
    )


@router.get("/{host_id}/packages")
async def host_packages(conn: Silo, host_id: uuid.UUID) -> Packages:
    """The host's latest packages snapshot (empty before its first)."""
    if await reads.host(conn, host_id) is None:
        raise not_found("such host")
    rows = await reads.packages(conn, host_id)
    return Packages(
        host_id=host_id,
        manager=rows[0].manager if rows else None,
        sent_at=rows[0].sent_at if rows else None,
        packages=[
            Package(
                name=r.name,
                arch=r.arch,
                version=r.version,
                source=r.source,
                source_version=r.source_version,
            )
            for r in rows
        ],
    )
