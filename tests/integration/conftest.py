"""Real PostgreSQL on loopback: a bootstrapped, migrated multi-tenant deployment shared by the
session, and fresh namespaces on demand; each removed afterwards."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

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
