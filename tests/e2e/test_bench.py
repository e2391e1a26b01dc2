"""`siloflow bench` end to end on a tiny workload: it runs both systems, checks every report
landed once, writes its figures, and leaves nothing behind. (It asserts the figures exist and
add up, never how fast they are: speed is the benchmark's business, not a test's.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from services.bench.procstat import listening_inodes
from tests.e2e.conftest import SILOFLOW
from tests.support import MANAGEMENT, MANAGEMENT_AUTH, admin_fetch


@pytest.mark.timeout(420)
async def test_bench_runs_both_systems_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(SILOFLOW),
            "bench",
            "--tenants",
            "2",
            "--hosts",
            "6",
            "--reports",
            "300",
            "--latency-seconds",
            "2",
            "--runs",
            "2",
            "--out",
            str(out),
        ],
        env={**os.environ, "SILOFLOW_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["valid"]
    for system in ("siloflow", "baseline"):
        peak = document[system]["peak"]
        assert peak["published"] == peak["committed"] == 300 and peak["exactly_once"]
        assert peak["throughput"] > 0 and peak["cpu_s_per_1000"]["total"] > 0
        assert {"rabbitmq", "postgresql"} <= set(peak["cpu_s_per_1000"])
        assert document[system]["steady"]["p99_s"] is not None
    assert set(document["ratios"]) == {"throughput", "cpu_per_report", "p99"}
    # Two interleaved pairs: the ratios are their medians, each run's figures are kept.
    assert document["n"] == len(document["runs"]) == 2
    for name, median in document["ratios"].items():
        seen = document["spread"][name]
        assert len(seen["runs"]) == 2 and seen["min"] <= median <= seen["max"]
    for run in document["runs"]:
        peak = run["siloflow"]["peak"]
        assert peak["published"] == peak["committed"] == 300
        assert peak["probe_cpu_s"] >= 0  # the bench's own sessions, left out of PostgreSQL's
    assert document["siloflow"]["router_lookups"] >= 300
    # Every bound host looked up through the router's directory, in a process of its own.
    assert document["siloflow"]["router_directory_hosts_looked_up"] == 6
    assert document["siloflow"]["router_directory_hosts_cached"] == 6
    assert document["siloflow"]["router_warm_misses"] == 0
    assert document["siloflow"]["router_warm_p99_ms"] > 0
    assert "committed reports/s" in result.stdout
    assert "ratios over n = 2 interleaved runs" in result.stdout
    # It ran on a PostgreSQL server of its own, and removed it: nothing of it anywhere.
    assert document["options"]["admin_dsn"].startswith("postgresql://postgres@127.0.0.1:")
    port = document["options"]["admin_dsn"].rsplit(":", 1)[1].split("/")[0]
    assert port != "5432"
    assert not listening_inodes(int(port)), "the bench's PostgreSQL server still runs"
    namespace = document["namespace"]
    left = f"{namespace}%"
    assert await admin_fetch("select 1 from pg_database where datname like $1", left) == []
    assert await admin_fetch("select 1 from pg_roles where rolname like $1", left) == []


def test_more_tenants_than_the_broker_can_hold_are_refused_up_front() -> None:
    result = subprocess.run(
        [str(SILOFLOW), "bench", "--tenants", "100000", "--hosts", "100000", "--no-baseline"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "file descriptors" in result.stdout + result.stderr
    assert "rabbit-cluster.sh" in result.stdout + result.stderr


def processes_naming(word: bytes) -> list[int]:
    """Pids whose command line holds `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if word in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


@pytest.mark.timeout(600)
async def test_the_scale_bench_starts_its_servers_runs_both_sides_and_removes_all(
    tmp_path: Path,
) -> None:
    out = tmp_path / "scale.json"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(SILOFLOW),
            "bench",
            "--scale",
            "--tenants",
            "12",
            "--hosts",
            "20",
            "--reports",
            "300",
            "--latency-seconds",
            "2",
            "--out",
            str(out),
        ],
        env={**os.environ, "SILOFLOW_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(out.read_text())
    scale = document["scale"]
    assert document["valid"] and scale["tenants"] == [10, 12]
    pair = document["pairs"][0]
    few, many = pair["10"]["siloflow"]["peak"], pair["12"]["siloflow"]["peak"]
    assert few["published"] == few["committed"] == 300 == many["committed"]
    assert scale["ratio_12_vs_10"] == pytest.approx(many["throughput"] / few["throughput"])
    assert scale["12"]["tenant_sessions_peak"] <= scale["12"]["tenant_session_bound"]
    assert "committed reports/s" in result.stdout
    # Both sides ran on the node it started (not the system broker), which is gone now.
    for side in pair.values():
        assert side["options"]["admin_dsn"] == pair["10"]["options"]["admin_dsn"]
    port = int(pair["10"]["options"]["admin_dsn"].rsplit(":", 1)[1].split("/")[0])
    assert not listening_inodes(port), "the bench's PostgreSQL server still runs"
    assert "starting a RabbitMQ node of the bench's own" in result.stdout
    assert not processes_naming(b"sf-bench-"), "the bench's RabbitMQ node still runs"
    for side in pair.values():
        left = f"{side['namespace']}%"
        assert await admin_fetch("select 1 from pg_database where datname like $1", left) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--scale", "--tenants", "5"], "--tenants"),
        (["--scale", "--admin-dsn", "postgresql://postgres@127.0.0.1/postgres"], "--admin-dsn"),
    ],
)
def test_the_scale_bench_refuses_what_it_cannot_do(args: list[str], says: str) -> None:
    result = subprocess.run(
        [str(SILOFLOW), "bench", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(300)
async def test_a_bench_told_to_stop_removes_everything_it_made(tmp_path: Path) -> None:
    """SIGTERM (as `timeout` or a CI's cancel sends) in the middle of a run: the bench stops its
    services, its PostgreSQL server, its vhost and users, as its own end does."""
    process = await asyncio.create_subprocess_exec(
        str(SILOFLOW),
        *("bench", "--tenants", "2", "--hosts", "6", "--reports", "200000"),
        *("--runs", "1", "--no-baseline", "--out", str(tmp_path / "bench.json")),
        env={**os.environ, "SILOFLOW_LOG_LEVEL": "warning", "COLUMNS": "300"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    said: list[str] = []
    try:
        while not any("as fast as they are taken" in line for line in said):  # mid-run
            line = await asyncio.wait_for(process.stdout.readline(), 240)
            assert line, "the bench ended before its throughput phase:\n" + "".join(said)
            said.append(line.decode(errors="replace"))
        named = next(line for line in said if line.startswith("namespace "))
        namespace = named.split()[1].rstrip(";")
        port = next(
            int(line.rsplit(" ", 1)[1]) for line in said if "of the bench's own on port" in line
        )
        assert processes_of(namespace), "its services should be running now"
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 180)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = "".join(said) + rest.decode(errors="replace")
    assert process.returncode == 143, output[-3000:]
    assert "stopped by SIGTERM" in output
    assert processes_of(namespace) == [], "a service of the bench still runs"
    assert not listening_inodes(port), "the bench's PostgreSQL server still runs"
    async with httpx.AsyncClient(auth=MANAGEMENT_AUTH, timeout=10) as api:
        vhost = await api.get(f"{MANAGEMENT}/api/vhosts/{namespace}")
        users = (await api.get(f"{MANAGEMENT}/api/users")).json()
    assert vhost.status_code == 404, "the bench's vhost is left"
    assert [u["name"] for u in users if u["name"].startswith(namespace)] == []


def processes_of(namespace: str) -> list[int]:
    """Pids running with this namespace in their environment (the bench's services)."""
    marker = f"SILOFLOW_NAMESPACE={namespace}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found
