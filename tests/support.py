"""Test helpers shared by the integration and end-to-end suites: throwaway namespaces on the real
PostgreSQL server, and their removal."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from click.testing import CliRunner, Result

from services.cli.main import cli
from services.core.settings import Settings, load_settings

ADMIN_DSN = os.environ.get(
    "SILOFLOW_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Test namespaces start with this, so a leftover is recognisable as a test's.
TEST_PREFIX = "sft"


def new_namespace() -> str:
    return f"{TEST_PREFIX}{secrets.token_hex(5)}"  # 13 characters, under the 16 allowed


AMQP_BASE = os.environ.get("SILOFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
MANAGEMENT = os.environ.get("SILOFLOW_TEST_MANAGEMENT", "http://127.0.0.1:15672")
MANAGEMENT_AUTH = ("guest", "guest")


def ensure_vhost(namespace: str) -> None:
    """Each test namespace gets a broker virtual host of its own."""
    with httpx.Client(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH, timeout=30) as api:
        api.put(f"/vhosts/{namespace}").raise_for_status()
        api.put(
            f"/permissions/{namespace}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
        ).raise_for_status()


def delete_vhost(namespace: str) -> None:
    """Remove the namespace's vhost and every broker user of the namespace (`<ns>-<role>`)."""
    with httpx.Client(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH, timeout=30) as api:
        response = api.delete(f"/vhosts/{namespace}")
        if response.status_code != 404:
            response.raise_for_status()
        users = api.get("/users")
        users.raise_for_status()
        for user in users.json():
            if user["name"].startswith(f"{namespace}-"):
                api.delete(f"/users/{user['name']}")


# Test deployments keep their state files (broker users' passwords) here, one folder per
# namespace, removed with the namespace.
STATE_DIR = Path(tempfile.gettempdir()) / "siloflow-tests"


def pg_base() -> str:
    """The PostgreSQL server the tests use, as a DSN without a database."""
    return os.environ.get("SILOFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def registry_dsn_for(namespace: str) -> str:
    return f"{pg_base()}/{namespace}_registry"


def settings_for(namespace: str, **overrides: Any) -> Settings:
    """Settings of a test deployment; its vhost is created here (and removed by drop_namespace)."""
    ensure_vhost(namespace)
    values: dict[str, Any] = {
        "namespace": namespace,
        "registry_dsn": registry_dsn_for(namespace),
        "amqp_url": f"{AMQP_BASE}/{namespace}",
        "management_url": MANAGEMENT,
        "connect_timeout_s": 3,
        "batch_wait_s": 0.01,
        "host_key_secrets": "1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "retry_max_s": 1.0,
        "state_dir": STATE_DIR,
    }
    if os.environ.get("SILOFLOW_TEST_CREDENTIALS", "builtin") == "openbao":
        values.update(openbao_settings(namespace))
    values.update(overrides)
    return load_settings(**values)


def openbao_settings(namespace: str) -> dict[str, Any]:
    """Settings that make a test deployment get its logins from the dev OpenBao server."""
    from tests import openbao  # noqa: PLC0415 - starts a server: only when asked for

    return {k: v for k, v in openbao.provision(namespace).items() if not k.startswith("_")}


def env_for(settings: Settings) -> dict[str, str]:
    """The environment a `siloflow` subprocess needs to act on this deployment."""
    env = dict(os.environ)
    env.update(
        SILOFLOW_NAMESPACE=settings.namespace,
        SILOFLOW_REGISTRY_DSN=settings.registry_url,
        SILOFLOW_AMQP_URL=settings.amqp_url,
        SILOFLOW_MANAGEMENT_URL=settings.management_api,
        SILOFLOW_HOST_KEY_SECRETS=settings.host_key_secrets.get_secret_value()
        if settings.host_key_secrets
        else "",
        SILOFLOW_MULTITENANT=str(settings.multitenant).lower(),
        SILOFLOW_LOG_FORMAT="json",
        SILOFLOW_CREDENTIALS=settings.credentials,
        SILOFLOW_CREDENTIAL_TTL_S=str(settings.credential_ttl_s),
        SILOFLOW_CREDENTIAL_MAX_TTL_S=str(settings.credential_max_ttl_s),
        SILOFLOW_OPENBAO_ADDR=settings.openbao_addr,
        SILOFLOW_OPENBAO_MOUNT=settings.openbao_mount,
        SILOFLOW_OPENBAO_TIMEOUT_S=str(settings.openbao_timeout_s),
        SILOFLOW_STATE_DIR=str(settings.state_dir),
        # The test deployment's pace, so the processes it starts recover as its in-process
        # services do (not after the production back-off of 30 s).
        SILOFLOW_RETRY_MAX_S=str(settings.retry_max_s),
        SILOFLOW_BATCH_WAIT_S=str(settings.batch_wait_s),
        SILOFLOW_CONNECT_TIMEOUT_S=str(settings.connect_timeout_s),
    )
    optional = {
        "SILOFLOW_CREDENTIAL_LOGIN_GROUP": settings.credential_login_group,
        "SILOFLOW_OPENBAO_ROLE_ID": settings.openbao_role_id,
        "SILOFLOW_OPENBAO_SECRET_ID": settings.openbao_secret_id.get_secret_value()
        if settings.openbao_secret_id
        else None,
    }
    env.update({k: v for k, v in optional.items() if v is not None})
    return env


async def admin_fetch(query: str, *args: Any, database: str = "postgres") -> list[asyncpg.Record]:
    conn = await asyncpg.connect(ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}")
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def drop_namespace(namespace: str) -> None:
    """Remove every database, role and the vhost a deployment with this namespace created."""
    assert namespace.startswith(TEST_PREFIX), "only test namespaces are ever dropped"
    await asyncio.to_thread(delete_vhost, namespace)
    shutil.rmtree(STATE_DIR / namespace, ignore_errors=True)
    from tests import openbao  # noqa: PLC0415

    await asyncio.to_thread(openbao.remove, namespace)  # revokes its leases, if it had any
    pattern = namespace.replace("_", r"\_") + r"\_%"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        for row in await conn.fetch(
            "select datname from pg_database where datname like $1", pattern
        ):
            await conn.execute(f'drop database if exists "{row["datname"]}" with (force)')
        roles = await conn.fetch("select rolname from pg_roles where rolname like $1", pattern)
        # Member roles first: owners and logins before the provisioner that created them.
        for row in sorted(roles, key=lambda r: r["rolname"].endswith("_provisioner")):
            await conn.execute(f'drop owned by "{row["rolname"]}"')
            await conn.execute(f'drop role if exists "{row["rolname"]}"')
    finally:
        await conn.close()


def drop_namespace_sync(namespace: str) -> None:
    asyncio.run(drop_namespace(namespace))


async def invoke_cli(args: list[str], settings: Settings) -> Result:
    """Run the `siloflow` CLI in-process against this deployment. It runs its own event loop, so
    it runs in a thread, out of the test's loop. The CLI configures logging for its own output
    (warnings only); the test process's configuration is put back after, or the tests after it
    would capture no info event."""
    saved = structlog.get_config()
    try:
        return await asyncio.to_thread(CliRunner().invoke, cli, args, env=env_for(settings))
    finally:
        structlog.configure(**saved)


def needs(tool: str, where: str, *, ci_installs: bool = True) -> None:
    """Skip, saying plainly what does not run and why, when `tool` is missing; under .ci/run
    (SILOFLOW_REQUIRE_TOOLS=1) a missing tool it installs is a failure instead."""
    if shutil.which(tool) is not None:
        return
    message = f"{tool} is not installed here, so {where} does not run"
    if ci_installs and os.environ.get("SILOFLOW_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message} (.ci/run installs it: deploy/local/ensure-tools.sh)")
    pytest.skip(message)
