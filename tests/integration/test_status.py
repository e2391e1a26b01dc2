"""`siloflow status --json` against the real broker and databases."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
import uuid

import httpx

from services.core.names import Names
from tests.integration.pipeline import Env, bound_host, drain, publish
from tests.reports import report
from tests.support import MANAGEMENT, MANAGEMENT_AUTH, env_for, invoke_cli


async def test_status_json_matches_the_broker_and_the_silos(env: Env) -> None:
    host = await bound_host(env, env.a)
    await publish(env.settings, [report("heartbeat", host) for _ in range(3)])
    await publish(env.settings, [report("heartbeat", uuid.uuid4())])  # unbound: dead letter
    await drain(env.settings, env.slugs)
    names = Names(env.settings.namespace)
    # The management API samples queue counts every few seconds: wait until it has seen the DLQ.
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        deadline = time.monotonic() + 30
        while True:
            broker = (
                await api.get(f"/queues/{env.settings.namespace}/{names.dlq('unrouted')}")
            ).json()
            if broker.get("messages", 0) >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        result = await invoke_cli(["status", "--json"], env.settings)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)  # logs go to stderr
        listed = {q["name"]: q for q in document["queues"]}
        queues = (await api.get(f"/queues/{env.settings.namespace}")).json()
    for queue in queues:
        if queue["name"] in listed:
            assert listed[queue["name"]]["messages"] == queue.get("messages", 0), queue["name"]
    assert {
        names.intake_queue,
        names.register_queue,
        names.tenant_queue(env.a.slug),
        names.dlq("unrouted"),
    } <= set(listed)
    assert listed[names.tenant_queue(env.a.slug)]["role"] == "tenant"
    # Dead letters carry their dead-at: the oldest one's age is read, not estimated.
    assert 0 <= listed[names.dlq("unrouted")]["oldest_age_s"] < 600
    assert listed[names.intake_queue]["oldest_age_s"] is None
    acme = next(t for t in document["tenants"] if t["slug"] == env.a.slug)
    assert acme["hosts"] >= 1 and acme["reports_last_minute"] >= 3 and acme["last_commit"]
    assert document["dead_letters"]["unrouted"]["no-tenant-binding"] >= 1


async def test_status_watch_redraws_until_interrupted(env: Env) -> None:
    """On a terminal the live view redraws; Ctrl-C ends it cleanly (exit 0, no traceback)."""
    primary, secondary = pty.openpty()  # rich draws a live view only on a terminal
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "status",
        "--watch",
        "--interval",
        "1",
        env={**env_for(env.settings), "COLUMNS": "160", "LINES": "60"},
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(secondary)
    screen = bytearray()
    drawn = asyncio.Event()

    def read() -> None:
        try:
            screen.extend(os.read(primary, 65536))
        except OSError:  # the child closed its end
            asyncio.get_running_loop().remove_reader(primary)
        if screen.count(b"tenants") >= 3:  # the first frame and two redraws
            drawn.set()

    loop = asyncio.get_running_loop()
    loop.add_reader(primary, read)
    try:
        await asyncio.wait_for(drawn.wait(), 60)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        loop.remove_reader(primary)
        os.close(primary)
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err, err.decode()
    assert b"queues" in screen
