"""A running API for the API tests: `siloflow run api` on loopback with operators of each role
(viewer and operator of tenant A, admin of all, one with no grant) and tokens of every kind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from services.bench.processes import free_port
from services.ops import operators
from tests.integration.pipeline import Env, bound_host, drain, publish
from tests.reports import report
from tests.support import admin_fetch, env_for, invoke_cli

READY_S = 30.0


@dataclass(frozen=True)
class Api:
    url: str
    tokens: dict[str, str]  # who -> bearer token
    canaries: dict[str, uuid.UUID]  # tenant slug -> a host that must appear in no other's answer


async def _token(env: Env, name: str) -> str:
    done = await invoke_cli(["operator", "token", "issue", name, "--json"], env.settings)
    assert done.exit_code == 0, done.output
    return str(json.loads(done.output)["token"])


@contextlib.asynccontextmanager
async def api_for(env: Env) -> AsyncIterator[Api]:
    """The operators, a canary host with reports in each tenant, and the API serving them."""
    settings = env.settings
    people = {
        "viewer": ("--tenant", env.a.slug, "viewer"),
        "operator": ("--tenant", env.a.slug, "operator"),
        "admin": ("--all", None, "admin"),
    }
    tokens: dict[str, str] = {}
    for name, (scope, slug, role) in people.items():
        await operators.add_operator(settings, f"api-{name}")
        args = ["operator", "grant", f"api-{name}", scope, *([slug] if slug else [])]
        granted = await invoke_cli([*args, "--role", role], settings)
        assert granted.exit_code == 0, granted.output
        tokens[name] = await _token(env, f"api-{name}")
    await operators.add_operator(settings, "api-nobody")  # no grant at all
    tokens["nobody"] = await _token(env, "api-nobody")
    tokens["expired"] = await _token(env, "api-viewer")
    await admin_fetch(
        "update registry_operator_tokens set expires_at = now() - interval '1 second' "
        "where last_used_at is null and created_at = (select max(created_at) from "
        "registry_operator_tokens)",
        database=settings.registry_database,
    )
    tokens["revoked"] = await _token(env, "api-viewer")
    revoked_id = (
        await admin_fetch(
            "select id from registry_operator_tokens order by created_at desc limit 1",
            database=settings.registry_database,
        )
    )[0]["id"]
    assert await operators.revoke_token(settings, revoked_id)
    await operators.add_operator(settings, "api-gone")
    await invoke_cli(["operator", "grant", "api-gone", "--all", "--role", "admin"], settings)
    tokens["disabled"] = await _token(env, "api-gone")
    assert await operators.disable(settings, "api-gone")

    canaries = {}
    for record in (env.a, env.b):
        canaries[record.slug] = await bound_host(env, record)
        host = canaries[record.slug]
        kinds = ("system_info", "hardware", "packages", "compliance")
        await publish(settings, [report(kind, host) for kind in kinds])
    await drain(settings, {env.a.slug, env.b.slug})

    # Every request of this module comes from 127.0.0.1: the throttle of bad tokens is tested
    # on an API of its own, below.
    async with serving(env, {"SILOFLOW_API_FREE_FAILURES": "100000"}) as url:
        yield Api(url, tokens, canaries)


@contextlib.asynccontextmanager
async def serving(env: Env, extra: dict[str, str]) -> AsyncIterator[str]:
    """`siloflow run api` on a free loopback port, until the block ends; its base URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "services.cli", "run", "api", "--port", str(port)),
        env=env_for(env.settings) | extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            deadline = asyncio.get_running_loop().time() + READY_S
            while True:  # ready when /healthz answers
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, "siloflow run api exited"
                assert asyncio.get_running_loop().time() < deadline, "the API never answered"
                await asyncio.sleep(0.05)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def get(api: Api, path: str, who: str | None) -> httpx.Response:
    headers = {} if who is None else {"Authorization": f"Bearer {api.tokens[who]}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        return await client.get(path, headers=headers)


async def call(api: Api, method: str, path: str, who: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.tokens[who]}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        return await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
