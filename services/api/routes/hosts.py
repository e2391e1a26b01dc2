"""`/api/v1/tenants/{slug}/hosts`: a tenant's hosts, read from its own silo only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from services.api.deps import Silo
from services.api.errors import not_found
from services.api.responses import as_json
from services.core.domain import HostStatus
from services.core.silo import reads

router = APIRouter(prefix="/tenants/{slug}/hosts", tags=["hosts"])

MAX_PAGE = 500


class Host(BaseModel):
    """A host as listed."""

    model_config = ConfigDict(frozen=True)

    host_id: uuid.UUID
    hostname: str | None
    status: HostStatus
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


@router.get("", response_model=HostPage)
async def list_hosts(
    conn: Silo,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: uuid.UUID | None = None,
) -> Response:
    """The tenant's hosts, `limit` at a time, in host id order (keyset: stable under writes)."""
    rows, following = await reads.host_page(conn, limit=limit, after=after)
    return as_json(
        {
            "hosts": [
                {"host_id": id_, "hostname": name, "status": status, "last_seen_at": seen}
                for id_, name, status, seen in rows
            ],
            "next": following,
        }
    )


@router.get("/{host_id}")
async def show_host(conn: Silo, host_id: uuid.UUID) -> HostDetail:
    """One host of the tenant (404 for a host of no tenant or of another: the same)."""
    row = await reads.host(conn, host_id)
    if row is None:
        raise not_found("such host")
    hw = await reads.hardware(conn, host_id)
    hardware = None if hw is None else Hardware.model_validate(hw, from_attributes=True)
    return HostDetail.model_validate({**row._mapping, "host_id": row.id, "hardware": hardware})


@router.get("/{host_id}/packages", response_model=Packages)
async def host_packages(conn: Silo, host_id: uuid.UUID) -> Response:
    """The host's latest packages snapshot (empty before its first)."""
    if await reads.host(conn, host_id) is None:
        raise not_found("such host")
    snapshot = await reads.packages_json(conn, host_id)
    # The document PostgreSQL rendered, with the host's id first (a UUID's text needs no
    # escaping): the one answer of the API not built in Python.
    return Response(f'{{"host_id":"{host_id}",{snapshot[1:]}', media_type="application/json")
