"""The README's enrollment story with the installed command: an operator issues a token, an
agent registers with it and reports, and the report lands in the token's tenant."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from services.core.settings import Settings
from tests.integration.pipeline import fetch
from tests.support import env_for

Siloflow = Callable[..., subprocess.CompletedProcess[str]]


def test_token_register_report(siloflow: Siloflow, e2e_settings: Settings, tmp_path: Path) -> None:
    siloflow("bootstrap", "--admin-dsn", "postgresql://postgres@127.0.0.1/postgres")
    siloflow("migrate")
    siloflow("tenant", "create", "acme")
    token = json.loads(siloflow("token", "issue", "--tenant", "acme", "--json").stdout)["token"]
    state = tmp_path / "agent.json"
    log = (tmp_path / "ingest.log").open("w")
    with (
        log,
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "ingest"],
            env=env_for(e2e_settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
        ) as ingest,
    ):
        try:
            deadline = time.monotonic() + 30
            while '"event": "ingest.started"' not in (tmp_path / "ingest.log").read_text():
                assert time.monotonic() < deadline and ingest.poll() is None
                time.sleep(0.1)
            registered = siloflow(
                "agent",
                "register",
                "--token",
                token,
                "--state",
                str(state),
                "--hostname",
                "edge-42",
            )
            assert "registered as host" in registered.stdout
            again = siloflow(
                "agent", "register", "--token", token, "--state", str(state), check=False
            )
            assert again.returncode == 2 and "registered already" in again.stderr
            assert stat.S_IMODE(state.stat().st_mode) == 0o600
            data = json.dumps(
                {
                    "status": "ok",
                    "agent_version": "1",
                    "uptime_s": 5,
                    "load_1": 0,
                    "load_5": 0,
                    "load_15": 0,
                }
            )
            siloflow("agent", "report", "heartbeat", "--data", data, "--state", str(state))
            bad = siloflow(
                "agent",
                "report",
                "heartbeat",
                "--data",
                "{oops",
                "--state",
                str(state),
                check=False,
            )
            assert bad.returncode == 2
        finally:
            ingest.send_signal(signal.SIGTERM)
            assert ingest.wait(30) == 0
            if ingest.poll() is None:
                os.kill(ingest.pid, signal.SIGKILL)
    siloflow("run", "all", "--burst")
    host_id = json.loads(state.read_text())["host_id"]
    database = f"{e2e_settings.namespace}_tenant_acme"
    rows = asyncio.run(
        fetch(database, "select hostname, status from hosts where id = $1::uuid", host_id)
    )
    assert [(r["hostname"], r["status"]) for r in rows] == [("edge-42", "ok")]
