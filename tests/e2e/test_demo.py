"""`siloflow demo` as a newcomer runs it (small): every report lands in its tenant, the
misbehaving ones are dead-lettered, the summary says where to look; `--down` removes it all."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from services.core.settings import Settings
from tests.e2e.conftest import SILOFLOW
from tests.support import admin_fetch, env_for


def test_demo_shows_reports_landing_and_down_removes_it(
    e2e_settings: Settings, tmp_path: Path
) -> None:
    def demo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SILOFLOW), "demo", *args],
            env=env_for(e2e_settings),
            cwd=tmp_path,  # where a newcomer's working directory keeps the services' log
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    shown = demo("--hosts", "4", "--reports", "120", "--rate", "100")
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    out = shown.stdout
    assert "120 of 120 reports committed" in out
    assert "vulnerabilities (the shipped bookworm catalog, revision" in out
    for reason in ("bad-signature", "not-json", "schema-violation", "no-tenant-binding"):
        assert reason in out
    ns = e2e_settings.namespace
    for slug in ("acme", "globex", "initech"):
        assert f"-d {ns}_tenant_{slug}" in out
        rows = asyncio.run(
            admin_fetch("select count(*) from hosts", database=f"{ns}_tenant_{slug}")
        )
        assert rows[0][0] == 4  # enrolled through tokens, each host in its tenant's silo
    assert not (tmp_path / ".siloflow-demo" / "services.pid").exists(), "services left running"
    # Nothing a newcomer would have to ignore: no log lines among the output.
    assert shown.stderr.strip() == "", shown.stderr
    # The last frame agrees with the summary under it: every work queue drained.
    frame = out[out.rindex("done: every report is in its place") :]
    frame = frame[: frame.index("reports committed")]
    waiting = re.findall(rf"│ ({re.escape(ns)}\.[a-z.-]+) +│ +([0-9,]+) │", frame)
    assert waiting and all(n == "0" for _, n in waiting), waiting
    assert "┘stopping" not in out
    # "Where to look next" works pasted into a plain shell (no virtualenv on its PATH).
    status = re.search(r"the deployment +(\S+ status)", out)
    assert status is not None, out
    pasted = subprocess.run(
        ["/bin/sh", "-c", status.group(1)],
        env={**env_for(e2e_settings), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert pasted.returncode == 0 and "queues" in pasted.stdout, pasted.stderr

    removed = demo("--down")
    assert removed.returncode == 0, removed.stderr
    assert f"removed tenant acme (database {ns}_tenant_acme," in removed.stdout
    again = demo("--down")  # nothing left: it says so by saying nothing removed
    assert again.returncode == 0, again.stderr
    assert "removed" not in again.stdout, again.stdout
    assert "is left to remove" in again.stdout
    left = asyncio.run(
        admin_fetch("select datname from pg_database where datname like $1", f"{ns}\\_%")
    )
    assert not left
