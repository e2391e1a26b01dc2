"""A stage for the benches that run siloflow as a user would (`bench.moving`, `bench.reads`): a
PostgreSQL server of their own (deploy/local/pg-instance.sh, commit timestamps on), a vhost of
the local RabbitMQ, a namespace bootstrapped and migrated on them, `siloflow` commands and
services run as processes; everything removed at the end, however it ends."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress

import asyncpg
import httpx

from services.bench.processes import free_port
from services.bench.servers import local_script
from services.core.logs import configure_logging
from services.core.settings import Settings, load_settings
from services.ops import migrate
from services.ops.bootstrap import bootstrap, teardown


def say(line: str) -> None:
    """A line of the bench's output, at once."""
    print(line, flush=True)


@asynccontextmanager
async def pg_server(label: str) -> AsyncIterator[str]:
    """A PostgreSQL server of the bench's own on a free port: its superuser DSN."""
    env = {
        "SILOFLOW_PG_PORT": str(free_port()),
        "SILOFLOW_PG_DIR": tempfile.mkdtemp(prefix=f"siloflow-bench-{label}-"),
    }
    try:
        await asyncio.to_thread(local_script, "pg-instance.sh", "start", env=env)
        yield await asyncio.to_thread(local_script, "pg-instance.sh", "env", env=env)
    finally:
        await asyncio.to_thread(local_script, "pg-instance.sh", "stop", env=env)


async def namespace(
    stack: AsyncExitStack, prefix: str, server: str, *more_servers: str
) -> Settings:
    """A namespace of its own on `server` (its registry's) and a vhost of its own, bootstrapped
    and migrated; torn down (every server named) when `stack` closes."""
    base = load_settings()
    name = f"{prefix}{secrets.token_hex(3)}"
    amqp = base.amqp_url.rstrip("/").rsplit("/", 1)[0] if base.vhost != "/" else base.amqp_url
    settings = load_settings(
        namespace=name,
        amqp_url=f"{amqp.rstrip('/')}/{name}",
        management_url=base.management_api,
        host_key_secrets="1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        registry_dsn=f"{server.rsplit('/', 1)[0]}/{name}_registry",
        log_level="warning",
    )
    configure_logging(settings)  # the figures, not the provisioning's info lines
    async with httpx.AsyncClient(base_url=f"{base.management_api}/api", timeout=30) as api:
        (await api.put(f"/vhosts/{name}")).raise_for_status()

    async def remove() -> None:
        with suppress(Exception):
            await teardown(settings, server, *more_servers)
        async with httpx.AsyncClient(base_url=f"{base.management_api}/api", timeout=30) as api:
            await api.delete(f"/vhosts/{name}")

    stack.push_async_callback(remove)
    await bootstrap(settings, server)
    await migrate.migrate(settings)
    return settings


def process_env(settings: Settings) -> dict[str, str]:
    """The environment a `siloflow` process of this namespace runs with."""
    assert settings.host_key_secrets is not None
    return {
        **os.environ,
        "SILOFLOW_NAMESPACE": settings.namespace,
        "SILOFLOW_AMQP_URL": settings.amqp_url,
        "SILOFLOW_REGISTRY_DSN": settings.registry_url,
        "SILOFLOW_MANAGEMENT_URL": settings.management_api,
        "SILOFLOW_HOST_KEY_SECRETS": settings.host_key_secrets.get_secret_value(),
        "SILOFLOW_LOG_LEVEL": "warning",
        "SILOFLOW_LOG_FORMAT": "json",
    }


async def siloflow(settings: Settings, *args: str) -> tuple[float, str]:
    """Run a `siloflow` command to its end: its wall time and its output."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=process_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"siloflow {' '.join(args)} failed:\n{text}")
    return time.perf_counter() - started, text


@asynccontextmanager
async def services(
    settings: Settings, *commands: tuple[str, ...], extra_env: dict[str, str] | None = None
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """`siloflow run ...` processes (e.g. ("router",), ("api", "--port", "8471")) until the
    block ends; then SIGTERM, and each waited for."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "services.cli", "run", *command),
            env=process_env(settings) | (extra_env or {}),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for command in commands
    ]
    try:
        yield processes
    finally:
        for process in processes:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()


def host_port(dsn: str) -> tuple[str, int]:
    """The host and port of a DSN."""
    netloc = dsn.split("@", 1)[1].split("/", 1)[0]
    host, port = netloc.rsplit(":", 1)
    return host, int(port)


async def commits(dsn: str) -> dict[str, tuple[float, float]]:
    """Each committed report's latency (sent_at to the end of its commit) and commit time
    (epoch seconds), by message id."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select message_id::text as id, "
            "extract(epoch from pg_xact_commit_timestamp(xmin) - sent_at)::float8 as latency, "
            "extract(epoch from pg_xact_commit_timestamp(xmin))::float8 as at from agent_messages"
        )
    finally:
        await conn.close()
    return {r["id"]: (r["latency"], r["at"]) for r in rows}


async def commit_times(dsn: str) -> dict[str, float]:
    """Each committed report's commit time (epoch seconds), by message id."""
    return {m: at for m, (_, at) in (await commits(dsn)).items()}
