"""The seam: the one place a request becomes a caller (from its bearer token) and a tenant the
caller may see (from the path and the caller's grants). A tenant the caller has no grant for is
answered exactly as one that does not exist. Routes take these as dependencies and never look
a caller or a tenant up themselves."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

import structlog
from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api.audit import Recorder
from services.api.errors import (
    ApiError,
    forbidden,
    not_found,
    rate_limited,
    unauthenticated,
)
from services.api.known import Known
from services.core.access import Action, may, sees
from services.core.audit import Outcome
from services.core.errors import DatabaseUnavailable, ResolutionError
from services.core.names import SLUG_RE
from services.core.registry import queries as registry
from services.core.registry.operators import Caller
from services.core.settings import Settings
from services.core.silo.databases import TenantDatabases
from services.core.throttle import Throttle

log = structlog.get_logger(__name__)


# Every dependency is `async def`, even those that await nothing: FastAPI runs a plain `def`
# one in its thread pool, a thread hop per request that cost more than the request's own work.


async def configured(request: Request) -> Settings:
    """The settings the API was started with."""
    settings: Settings = request.app.state.settings
    return settings


Configured = Annotated[Settings, Depends(configured)]


async def registry_engine(request: Request) -> AsyncEngine:
    """The registry's pool, opened by the app's lifespan."""
    engine: AsyncEngine = request.app.state.registry
    return engine


Registry = Annotated[AsyncEngine, Depends(registry_engine)]


async def caller(
    request: Request, engine: Registry, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """The operator whose token the request carries; 401 for none, or one not valid now; 429
    (the token not even looked at) for a source that keeps presenting bad ones."""
    throttle: Throttle = request.app.state.throttle
    source = request.client.host if request.client else "-"
    now = time.monotonic()
    wait_s = throttle.wait_s(source, now)
    if wait_s > 0:
        raise rate_limited(wait_s)
    scheme, _, token = (authorization or "").partition(" ")
    found = None
    if scheme.lower() == "bearer" and token.strip():
        known: Known = request.app.state.known
        found = await known.caller(token.strip())
    if found is None:
        failures = throttle.failed(source, now)
        log.warning("api.unauthenticated", source=source, failures=failures)
        raise unauthenticated()
    throttle.succeeded(source)
    return found


Authenticated = Annotated[Caller, Depends(caller)]


async def visible_tenant(request: Request, slug: str, who: Authenticated) -> registry.TenantRecord:
    """The tenant of the path, if the caller has a grant on it; else 404, as for no tenant."""
    if not SLUG_RE.fullmatch(slug):
        raise not_found("such tenant")
    known: Known = request.app.state.known
    record = await known.tenant(slug)
    if record is None or not sees(who.grants, record.id):
        raise not_found("such tenant")
    return record


Visible = Annotated[registry.TenantRecord, Depends(visible_tenant)]


async def recorder(request: Request, who: Authenticated, engine: Registry) -> Recorder:
    """The caller's audit recorder (routes say what they did with it)."""
    return Recorder(who, engine, request.app.state.silos)


Audit = Annotated[Recorder, Depends(recorder)]

# Calls that change nothing: a refusal of one is an answer, not an act to keep.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def permitted(action: Action, what: str) -> Any:
    """A dependency: the visible tenant, if the caller's role there permits `action` (403
    otherwise: the tenant is theirs to see, the call is not theirs to make; a refused change
    is kept in the tenant's audit trail as denied)."""

    async def check(
        request: Request, tenant: Visible, who: Authenticated, audit: Audit
    ) -> registry.TenantRecord:
        if not may(who.grants, action, tenant.id):
            if request.method not in _READS:
                detail = {"call": f"{request.method} {request.url.path}"}
                await audit.keep(f"api.{action}", Outcome.DENIED, tenant, detail)
            raise forbidden(what)
        return tenant

    return Depends(check)


def unavailable() -> ApiError:
    """The tenant's database cannot be reached now (its server down, or the tenant moving)."""
    return ApiError(503, "unavailable", "this tenant's data cannot be read now; try again")


def silo(action: Action, what: str) -> Any:
    """A dependency: a read-only connection to the tenant's own database, with a short-lived
    login of its reader role, if the caller may do `action` there (the one way a route reaches
    managed data)."""

    allowed = permitted(action, what)

    async def connection(
        request: Request, tenant: registry.TenantRecord = allowed
    ) -> AsyncIterator[AsyncConnection]:
        databases: TenantDatabases = request.app.state.silos
        async with AsyncExitStack() as stack:
            try:
                conn = await stack.enter_async_context(databases.session(tenant))
            except (DatabaseUnavailable, ResolutionError) as exc:
                raise unavailable() from exc
            yield conn

    return Depends(connection)


Silo = Annotated[AsyncConnection, silo(Action.READ, "read this tenant's data")]
