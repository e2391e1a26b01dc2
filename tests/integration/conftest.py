"""Real PostgreSQL on loopback: a bootstrapped, migrated multi-tenant deployment shared by the
session, fresh namespaces on demand, and a second PostgreSQL server for placements; each removed
afterwards."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.bench.processes import free_port
from services.core.settings import Settings
from services.ops import migrate
from services.ops.bootstrap import bootstrap
from tests.integration.pipeline import Env, deploy_env
from tests.support import (
    ADMIN_DSN,
    delete_vhost,
    drop_namespace,
    ensure_vhost,
    new_namespace,
    settings_for,
)


@pytest.fixture(scope="session")
async def deployment() -> AsyncIterator[Settings]:
    """A multi-tenant deployment, bootstrapped and migrated, for the whole session."""
    namespace = new_namespace()
    settings = settings_for(namespace)
    try:
        await bootstrap(settings, ADMIN_DSN)
        report = await migrate.migrate(settings)
        assert not report.failed
        yield settings
    finally:
        await drop_namespace(namespace)


@pytest.fixture
async def fresh_namespace() -> AsyncIterator[Callable[..., Settings]]:
    """Settings for brand-new namespaces (nothing created yet); all removed after the test."""
    made: list[str] = []

    def make(**overrides: Any) -> Settings:
        namespace = new_namespace()
        made.append(namespace)
        return settings_for(namespace, **overrides)

    yield make
    for namespace in made:
        await drop_namespace(namespace)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[Env]:
    """A deployment of its own for one module of pipeline tests, with tenants acme and globex."""
    namespace = new_namespace()
    settings = settings_for(namespace)
    try:
        yield await deploy_env(settings)
    finally:
        await drop_namespace(namespace)


@pytest.fixture
def slug() -> str:
    """A tenant slug no other test uses."""
    return f"t-{secrets.token_hex(4)}"


@pytest.fixture
async def broker_only() -> AsyncIterator[Settings]:
    """Settings for a namespace that has only a broker vhost (no databases); removed after."""
    namespace = new_namespace()
    ensure_vhost(namespace)
    try:
        yield settings_for(namespace)
    finally:
        delete_vhost(namespace)


PG_INSTANCE = Path(__file__).resolve().parents[2] / "deploy" / "local" / "pg-instance.sh"


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server of the test session's own (deploy/local/pg-instance.sh), which a
    test may take down and bring back."""

    host: str
    port: int
    directory: str

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def script(self, action: str) -> None:
        environment = dict(
            os.environ, SILOFLOW_PG_PORT=str(self.port), SILOFLOW_PG_DIR=self.directory
        )
        subprocess.run([str(PG_INSTANCE), action], env=environment, check=True, capture_output=True)


@pytest.fixture(scope="session")
def second_server() -> Iterator[Server]:
    """A second PostgreSQL server on a free port, for tenants placed off the registry's server;
    stopped and its data directory removed at the end of the session."""
    server = Server("127.0.0.1", free_port(), tempfile.mkdtemp(prefix="sf-pg2-"))
    server.script("start")
    try:
        yield server
    finally:
        server.script("stop")
