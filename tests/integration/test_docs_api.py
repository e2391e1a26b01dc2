"""docs/operations.md's first hour through the API, run as printed: the shell block under "An
operator's first hour", against a deployment of its own with tenant acme (a host with every
kind of report, and a dead letter), on a free port instead of 8470. Only the port changes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.bench.processes import free_port
from services.workers import app as workers_app
from tests.integration.pipeline import (
    Env,
    bound_host,
    drain,
    publish,
    queue_with_router_rights,
)
from tests.reports import compliance, report
from tests.support import env_for, needs

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def first_hour() -> str:
    text = DOC.read_text()
    start = text.index("An operator's first hour")
    found = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert found is not None, "docs/operations.md: the first hour's shell block is gone"
    return found.group(1)


@pytest.fixture(scope="module")
async def acme(env: Env) -> AsyncIterator[Env]:
    host = await bound_host(env, env.a)
    kinds = ("system_info", "hardware", "packages", "compliance")
    await publish(env.settings, [report(kind, host) for kind in kinds])
    await drain(env.settings, {env.a.slug})
    refused = compliance()
    refused["results"][0]["status"] = "maybe"  # its database refuses it: a dead letter of acme
    message = report("compliance", host, refused).message()
    assert message.headers is not None
    message.headers["x-siloflow-tenant"] = env.a.slug
    await queue_with_router_rights(env.settings, env.a.slug, [message])
    await workers_app.run(env.settings, tenants={env.a.slug}, burst=True)
    yield env


async def test_the_first_hour_works_as_printed(acme: Env) -> None:
    needs("jq", "the API examples of docs/operations.md")
    needs("curl", "the API examples of docs/operations.md")
    assert acme.a.slug == "acme"
    port = free_port()
    script = first_hour().replace("8470", str(port))
    bin_dir = str(Path(sys.executable).parent)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env=env_for(acme.settings) | {"PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 180)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
    said = out.decode(errors="replace")
    assert process.returncode == 0, said
    lines = said.splitlines()
    assert "acme" in lines and "globex" not in lines  # her tenants
    assert any(line.startswith("sfe_") for line in lines)  # the enrollment token, once
    assert "revoked" in lines
    assert any(line.endswith(" commit-rejected") for line in lines)  # acme's dead letter
    assert "[1,0]" in lines  # replayed, none failed
    assert "operator:alice token.issue ok" in lines
    assert "operator:alice dlq.replay ok" in lines
    assert lines[-1] == "401" or "401" in lines
