"""The servers the bench runs on. PostgreSQL: by default a server of the bench's own
(`deploy/local/pg-instance.sh`), so nothing else runs on it while the systems are measured and it
records commit timestamps (each report is timed to the end of its commit); or one the operator
names with --admin-dsn, which must record them too. RabbitMQ: the one the settings name, or for
`--scale` a node of the bench's own (`deploy/local/rabbit-cluster.sh start 1`), started with the
file descriptors a thousand quorum queues need."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from services.bench.deployment import Options
from services.bench.probes import commit_timestamps_on
from services.bench.processes import free_port
from services.core.errors import InvalidArgument, ServerFailed

LOCAL = Path(__file__).parents[2] / "deploy" / "local"
# Sessions the bench's server allows: the services' pools, the bench's probe (a session per
# database) and the baseline's writers (a session per database), with room to spare.
CONNECTIONS_PER_TENANT = 3
CONNECTIONS_SPARE = 200


def connection_budget(tenants: int) -> int:
    """Sessions the bench's own server allows for this many tenants."""
    return CONNECTIONS_PER_TENANT * tenants + CONNECTIONS_SPARE


def all_free(ports: Iterable[int]) -> bool:
    """Whether every one of these loopback ports can be bound now."""
    try:
        for port in ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port_offset() -> int:
    """A port offset for rabbit-cluster.sh whose three ports for node 1 (AMQP, management,
    distribution: offset + 1, + 10001, + 20001) are free now."""
    for _ in range(50):
        offset = 30_000 + secrets.randbelow(15_000)
        if all_free((offset + 1, offset + 10_001, offset + 20_001)):
            return offset
    raise ServerFailed("found no three free ports for a RabbitMQ node in 50 tries")


def local_script(name: str, *args: str, env: dict[str, str]) -> str:
    """Run one of deploy/local's scripts; its output, or ServerFailed with the server's words."""
    result = subprocess.run(
        [str(LOCAL / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        log = Path(env.get("SILOFLOW_PG_DIR", "/nonexistent")) / "server.log"  # PostgreSQL's
        tail = log.read_text()[-500:] if log.is_file() else result.stderr.strip()[-500:]
        raise ServerFailed(f"deploy/local/{name} {' '.join(args)} failed: {tail.strip()}")
    return result.stdout.strip()


@asynccontextmanager
async def postgres(options: Options, progress: Callable[[str], None]) -> AsyncIterator[str]:
    """The admin DSN of the server to run on, for as long as the block runs."""
    if options.admin_dsn is not None:
        try:
            recorded = await commit_timestamps_on(options.admin_dsn)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"--admin-dsn {options.admin_dsn!r}: {exc}") from None
        if not recorded:
            raise InvalidArgument(
                "the server of --admin-dsn does not record commit timestamps, which the bench "
                "times each report's commit by: set track_commit_timestamp = on there and "
                "restart it, or leave --admin-dsn out (the bench then starts a server of its own)"
            )
        yield options.admin_dsn
        return
    port = free_port()
    env = {
        "SILOFLOW_PG_PORT": str(port),
        "SILOFLOW_PG_DIR": tempfile.mkdtemp(prefix="siloflow-bench-pg-"),
        "SILOFLOW_PG_MAX_CONNECTIONS": str(connection_budget(options.tenants)),
    }
    progress(f"starting a PostgreSQL server of the bench's own on port {port}")
    try:
        await asyncio.to_thread(local_script, "pg-instance.sh", "start", env=env)
    except ServerFailed:
        await asyncio.to_thread(local_script, "pg-instance.sh", "stop", env=env)
        raise
    try:
        yield await asyncio.to_thread(local_script, "pg-instance.sh", "env", env=env)
    finally:
        await asyncio.to_thread(local_script, "pg-instance.sh", "stop", env=env)


@asynccontextmanager
async def rabbitmq(progress: Callable[[str], None]) -> AsyncIterator[dict[str, str]]:
    """A RabbitMQ node of the bench's own, for as long as the block runs: the settings that
    reach it (SILOFLOW_AMQP_URL, SILOFLOW_MANAGEMENT_URL)."""
    env = {
        "SILOFLOW_CLUSTER_DIR": tempfile.mkdtemp(prefix="siloflow-bench-rabbit-"),
        "SILOFLOW_CLUSTER_PORT_OFFSET": str(free_port_offset()),
        "SILOFLOW_CLUSTER_NAME": f"sf-bench-{secrets.token_hex(3)}",
    }
    progress("starting a RabbitMQ node of the bench's own (its file descriptors at the hard limit)")
    try:
        await asyncio.to_thread(local_script, "rabbit-cluster.sh", "start", "1", env=env)
        lines = await asyncio.to_thread(local_script, "rabbit-cluster.sh", "env", env=env)
        settings = dict(line.split("=", 1) for line in lines.splitlines() if "=" in line)
        yield settings
    finally:
        await asyncio.to_thread(local_script, "rabbit-cluster.sh", "stop", env=env)
