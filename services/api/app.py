"""The API's wiring and lifespan: the registry's pool opened at start and closed at the end,
errors in one shape, routes under `/api/v1`, and uvicorn serving it until SIGTERM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from services.api import errors
from services.api.deps import Registry
from services.api.known import Known
from services.api.routes import audit, dead_letters, findings, hosts, tenants, tokens
from services.core.db import registry_engine
from services.core.errors import ServiceStopped
from services.core.lifespan import registry_answers, stop_on_signals
from services.core.settings import Settings
from services.core.silo.credentials.issuers import credential_source
from services.core.silo.databases import RegistryDirectory, TenantDatabases
from services.core.throttle import Throttle, ThrottleLimits

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app for these settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        # No pre-ping (three round trips a checkout, two checkouts a request): a connection
        # found dead fails its request with 503 and is dropped from the pool.
        app.state.registry = registry_engine(settings, pool_size=5, pre_ping=False)
        # Bad API tokens slowed down as registration's enrollment tokens are (one rule, core).
        limits = ThrottleLimits(
            free_failures=settings.api_free_failures, failures_per_s=settings.api_failures_per_s
        )
        app.state.throttle = Throttle(limits, time.monotonic())
        # Tenant data through read-only logins of each tenant's reader role, issued by the same
        # broker as the workers' (built-in or OpenBao); and read-only sessions besides.
        app.state.silos = TenantDatabases(
            settings,
            RegistryDirectory(app.state.registry),
            credential_source(settings, reader=True),
            server_settings={"default_transaction_read_only": "on"},
        )
        # Callers and tenants remembered while the registry's notices say nothing changed.
        app.state.known = Known(settings, app.state.registry)
        app.state.known.start()
        try:
            yield
        finally:
            await app.state.known.close()
            await app.state.silos.close()
            await app.state.registry.dispose()

    app = FastAPI(
        title="siloflow",
        version="1",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(engine: Registry) -> dict[str, str]:
        """Alive, and the registry answers."""
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        return {"status": "ok"}

    api = APIRouter(prefix=PREFIX)
    api.include_router(tenants.router)
    api.include_router(hosts.router)
    api.include_router(findings.router)
    api.include_router(tokens.router)
    api.include_router(audit.router)
    api.include_router(dead_letters.router)
    app.include_router(api)
    return app


async def run(
    settings: Settings, *, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Wait for the registry (saying so once, as every service does), then serve the API until
    SIGTERM/SIGINT (uvicorn's own handling: in-flight requests finish) or until `stop`."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    engine = registry_engine(settings, pool_size=1)
    try:
        await registry_answers(settings, engine, "api", stop)
    except ServiceStopped:
        return
    finally:
        await engine.dispose()
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        http="httptools",
    )
    server = uvicorn.Server(config)
    log.info("api.starting", host=host, port=port)

    async def stop_when_told() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_told())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    log.info("api.stopped")
