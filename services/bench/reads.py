"""The API's read figures (`python -m services.bench.reads`, or `make bench-api`): a tenant of
1,000 hosts read through `siloflow run api` by a real HTTP load generator while the pipeline
runs at half its maximum, with the pipeline's own p99 beside each figure.

On a PostgreSQL server of its own and a vhost of the local RabbitMQ (`bench.stage`) it
provisions tenants `big` (1,000 hosts, each with a system_info, a hardware report and a
packages snapshot of ~2,000 entries, committed through the workers' own store) and `other`
(100 hosts), and runs the router, the workers and the API as processes. Then:

1. the pipeline's maximum, taken as its load is applied later (the same publisher on the same
   machine): `--backlog` reports of the bench's mix published unpaced, over the span from the
   first publish to the last commit (PostgreSQL commit timestamps);
2. `--runs` rounds, each of three phases of `--seconds`, in turn: the pipeline alone at half its
   maximum (paced publishes of the mix, hosts of both tenants), then the same with loadtest at
   `--hosts-rate` requests/s on `GET /tenants/big/hosts` (its first page of 100), then with
   loadtest at `--packages-rate` on `GET /tenants/big/hosts/{id}/packages` (2,000 entries).

loadtest (npm; installed into `<state_dir>/tools` on first use) sends requests open loop, each
on its schedule at the rate asked (a slow answer delays no later request, so no coordinated
omission); its p99 is of every request of the phase, from send to last byte, and the achieved
rate is printed beside it (a rate not reached, or an error, voids the figure). autocannon was
tried first and left: its `--overallRate` sends each second's quota in a burst at the second's
start, and its correction then records intervals of 1 ms. The
pipeline's p99 is from publish (wall clock, after the broker's confirm) to commit (PostgreSQL's
commit timestamp, same machine) of the reports published in the phase. The figures compared
with the targets are the medians over the runs. Everything is removed at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from services.agent.client import Identity
from services.bench import procstat, publisher, workload
from services.bench.processes import free_port
from services.bench.stage import (
    commits,
    host_port,
    namespace,
    pg_server,
    say,
    services,
    siloflow,
)
from services.core.broker.users import agent_url
from services.core.db import ServerAddress, at_server, provisioner_url
from services.core.hostkeys import load_keyring
from services.core.names import Names
from services.core.settings import Settings
from services.ops import bindings
from services.ops.tenants import create_tenant
from services.workers import store
from services.workers.handlers import Report

LOADTEST = "loadtest@8"
BIG, OTHER = "big", "other"
TARGETS = {"hosts": 50.0, "packages": 100.0}  # p99 ms, the issue's


@dataclass(frozen=True)
class Options:
    """What to run."""

    hosts: int
    backlog: int
    runs: int
    seconds: float
    hosts_rate: int
    packages_rate: int
    share: float
    api_nice: int


def _loadtest(settings: Settings) -> Path:
    """loadtest's executable: on the PATH, else installed once into `<state_dir>/tools`."""
    found = shutil.which("loadtest")
    if found:
        return Path(found)
    tools = Path(settings.state_dir) / "tools"
    executable = tools / "node_modules" / ".bin" / "loadtest"
    if not executable.exists():
        if shutil.which("npm") is None:
            raise SystemExit("the API bench needs loadtest (npm): install Node.js and npm")
        say(f"installing {LOADTEST} into {tools} (once)")
        tools.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(tools), "--no-audit", "--no-fund", LOADTEST],
            check=True,
            capture_output=True,
        )
    return executable


async def _seed(settings: Settings, server: str, database: str, hosts: list[uuid.UUID]) -> float:
    """Each host's system_info, hardware and packages snapshot committed into the tenant's
    database as its workers would (store.commit_batch); returns the seconds it took."""
    host, port = host_port(server)
    url = at_server(provisioner_url(settings), ServerAddress(host, port), database)
    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    rng = random.Random(1)
    packages = workload.packages_snapshot()
    started = time.perf_counter()
    try:
        await conn.execute(f'set role "{Names(settings.namespace).tenant_owner_role(BIG)}"')
        for kind in ("system_info", "hardware", "packages"):
            for start in range(0, len(hosts), 100):
                batch = [
                    Report(
                        uuid.uuid4(),
                        host_id,
                        kind,
                        datetime.now(UTC),
                        None,
                        workload.data(kind, start + i, rng, packages),
                    )
                    for i, host_id in enumerate(hosts[start : start + 100])
                ]
                await store.commit_batch(conn, batch)
    finally:
        await conn.close()
    return time.perf_counter() - started


class Pipeline:
    """The main bench's agents (`bench.publisher`, a process of its own): the bench's mix from
    both tenants' hosts, unpaced or at a rate; each report's latency from its `sent_at` (built
    when sent) to the commit that made it durable."""

    def __init__(
        self, settings: Settings, fleet: dict[str, list[Identity]], dsns: dict[str, str]
    ) -> None:
        self.settings = settings
        self.identities = [i for ids in fleet.values() for i in ids]
        self.dsns = dsns
        self.workdir = Path(tempfile.mkdtemp(prefix="siloflow-bench-reads-"))
        self.seed = 0

    async def publish(self, count: int, rate: float) -> tuple[float, set[str]]:
        """`count` reports at `rate` (0: as fast as confirms come): when it began (epoch
        seconds) and the ids the broker confirmed."""
        self.seed += 1
        summary = await publisher.in_process(
            agent_url(self.settings),
            Names(self.settings.namespace).agents_exchange,
            self.identities,
            count=count,
            rate=rate,
            seed=self.seed,
            sign=True,
            window=500,
            workdir=self.workdir,
        )
        return float(summary["started"]), set(summary["ids"])

    async def committed(
        self, ids: set[str], timeout_s: float = 120
    ) -> dict[str, tuple[float, float]]:
        """(latency s, commit time) of each of these reports, once every one is committed."""
        deadline = time.monotonic() + timeout_s
        while True:
            found: dict[str, tuple[float, float]] = {}
            for dsn in self.dsns.values():
                found |= await commits(dsn)
            missing = ids - found.keys()
            if not missing:
                return {m: found[m] for m in ids}
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(missing)} of {len(ids)} reports were never committed")
            await asyncio.sleep(0.5)


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else 0


_FIGURES = {
    "rate": re.compile(r"^Effective rps:\s+([\d.]+)", re.M),
    "errors": re.compile(r"^Total errors:\s+(\d+)", re.M),
    "p50_ms": re.compile(r"^\s*50%\s+([\d.]+) ms", re.M),
    "p99_ms": re.compile(r"^\s*99%\s+([\d.]+) ms", re.M),
}


async def _load(
    executable: Path, url: str, token: str, rate: int, seconds: float
) -> dict[str, float]:
    """loadtest at `rate` requests/s for `seconds`, open loop (each request sent on its
    schedule, whatever the ones before it are doing): its figures."""
    process = await asyncio.create_subprocess_exec(
        str(executable),
        *("--keepalive", "--rps", str(rate), "--maxSeconds", str(int(seconds))),
        *("--headers", f"authorization:Bearer {token}", url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"loadtest failed ({process.returncode}):\n{text[-2000:]}")
    figures = {}
    for name, pattern in _FIGURES.items():
        found = pattern.search(text)
        if found is None:
            raise RuntimeError(f"loadtest said no {name}:\n{text[-2000:]}")
        figures[name] = float(found.group(1))
    return figures


async def run(options: Options) -> None:
    """Set up, seed, measure, remove."""
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(pg_server("api"))
        settings = await namespace(stack, "benchapi", server)
        executable = _loadtest(settings)
        keyring = load_keyring(settings)
        fleet: dict[str, list[Identity]] = {}
        dsns: dict[str, str] = {}
        for slug, count in ((BIG, options.hosts), (OTHER, options.hosts // 10)):
            database = (await create_tenant(settings, slug)).tenant.db_name
            dsns[slug] = f"{server.rsplit('/', 1)[0]}/{database}"
            fleet[slug] = []
            for _ in range(count):
                host_id = uuid.uuid4()
                await bindings.bind(settings, host_id, slug, move=False)
                fleet[slug].append(Identity(host_id, keyring.host_key(host_id), keyring.current))
        big_hosts = [i.host_id for i in fleet[BIG]]
        database = dsns[BIG].rsplit("/", 1)[1]
        seeded_s = await _seed(settings, server, database, big_hosts)
        say(
            f"seeded {BIG}: {len(big_hosts):,} hosts with system_info, hardware and ~2,000 "
            f"packages each in {seeded_s:.1f} s; {OTHER}: {len(fleet[OTHER])} hosts"
        )
        await siloflow(settings, "operator", "add", "bench")
        await siloflow(settings, "operator", "grant", "bench", "--tenant", BIG, "--role", "viewer")
        _, issued = await siloflow(settings, "operator", "token", "issue", "bench", "--json")
        token = json.loads(issued)["token"]
        pipeline = Pipeline(settings, fleet, dsns)
        port = free_port()
        async with services(
            settings, ("router",), ("workers",), ("api", "--port", str(port))
        ) as running:
            api_pid = running[2].pid
            if options.api_nice:
                # What a deployment gives the API with systemd's CPUWeight= (or a pod's CPU
                # request): the scheduler runs it first when every core is wanted.
                os.setpriority(os.PRIO_PROCESS, api_pid, options.api_nice)
            # 1. The pipeline's maximum, taken as its load is applied after: the same publisher,
            # only unpaced. A first round warms every queue, consumer and login.
            await pipeline.committed((await pipeline.publish(len(pipeline.identities), 0))[1])
            started, ids = await pipeline.publish(options.backlog, 0)
            times = await pipeline.committed(ids)
            span_s = max(at for _, at in times.values()) - started
            maximum = len(ids) / span_s
            half = maximum * options.share
            say(
                f"pipeline maximum: {maximum:,.0f} reports/s ({len(ids):,} of the mix published "
                f"unpaced, {span_s:.1f} s from the first publish to the last commit); load "
                f"applied: {half:,.0f}/s ({options.share:.0%})"
            )
            base = f"http://127.0.0.1:{port}/api/v1/tenants/{BIG}"
            await _ready(base, token)
            phases = {
                "pipeline alone": None,
                "hosts": (f"{base}/hosts", options.hosts_rate),
                "packages": (f"{base}/hosts/{big_hosts[0]}/packages", options.packages_rate),
            }
            figures: dict[str, list[dict[str, float]]] = {name: [] for name in phases}
            for round_ in range(1, options.runs + 1):
                for name, load in phases.items():
                    figure = await _phase(
                        executable, pipeline, half, options.seconds, load, token, api_pid
                    )
                    figures[name].append(figure)
                    say(f"run {round_} {name}: " + _line(figure))
        _report(figures, options, half)


async def _ready(base: str, token: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = await client.get(base, headers={"authorization": f"Bearer {token}"})
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API never answered")
            await asyncio.sleep(0.2)


async def _phase(
    executable: Path,
    pipeline: Pipeline,
    rate: float,
    seconds: float,
    load: tuple[str, int] | None,
    token: str,
    api_pid: int,
) -> dict[str, float]:
    before, busy_before = procstat.snapshot(), _machine_busy_s()
    began = time.time()
    publishing = asyncio.ensure_future(
        pipeline.publish(int(rate * seconds), rate)
        if rate > 0
        else asyncio.sleep(seconds, (began, set[str]()))  # --share 0: no pipeline load
    )
    if load is None:
        result: dict[str, float] | None = None
    else:
        url, requests_per_s = load
        result = await _load(executable, url, token, requests_per_s, seconds)
    started, ids = await publishing
    after, busy_after = procstat.snapshot(), _machine_busy_s()
    elapsed_s = time.time() - began
    times = await pipeline.committed(ids)
    waits_ms = [latency * 1000 for latency, _ in times.values()]
    span_s = max((at for _, at in times.values()), default=started + 1) - started
    figure = {"pipeline_p99_ms": _p99(waits_ms), "pipeline_rate": len(ids) / span_s}
    figure["machine_cores"] = (busy_after - busy_before) / elapsed_s
    if result is not None:
        api = {api_pid}
        api_s = procstat.group_cpu_s(after, api) - procstat.group_cpu_s(before, api)
        figure |= result | {"api_cpu_ms": api_s * 1000 / max(result["rate"] * seconds, 1)}
    return figure


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / procstat.CLOCK_TICKS


def _line(figure: dict[str, float]) -> str:
    pipeline = (
        f"pipeline {figure['pipeline_rate']:,.0f}/s, p99 {figure['pipeline_p99_ms']:,.0f} ms; "
        f"machine {figure['machine_cores']:.2f} of {os.cpu_count()} cores busy"
    )
    if "p99_ms" not in figure:
        return pipeline
    return (
        f"API {figure['rate']:,.0f} req/s, p50 {figure['p50_ms']:.1f} ms, p99 "
        f"{figure['p99_ms']:.1f} ms, {figure['errors']:.0f} errors, "
        f"{figure['api_cpu_ms']:.2f} ms of the API's CPU a request; {pipeline}"
    )


def _report(figures: dict[str, list[dict[str, float]]], options: Options, half: float) -> None:
    say("")
    say(f"medians over {options.runs} runs (pipeline offered {half:,.0f}/s in every phase):")
    for name, runs in figures.items():
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        line = f"  {name}: " + _line(median)
        if name in TARGETS:
            asked = options.hosts_rate if name == "hosts" else options.packages_rate
            reached = all(r["rate"] >= 0.95 * asked and r["errors"] == 0 for r in runs)
            verdict = (
                "void: the rate asked was not reached, or a request failed"
                if not reached
                else ("met" if median["p99_ms"] <= TARGETS[name] else "MISSED")
            )
            line += f"  [target p99 <= {TARGETS[name]:.0f} ms at {asked}/s: {verdict}]"
        say(line)


def main() -> None:
    """`python -m services.bench.reads [--runs N] [--seconds S] ...`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000, help="hosts of tenant big")
    parser.add_argument("--backlog", type=int, default=4000, help="reports drained for the max")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the three phases")
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase's length")
    parser.add_argument("--hosts-rate", type=int, default=200, help="requests/s on the hosts")
    parser.add_argument("--packages-rate", type=int, default=20, help="requests/s on packages")
    parser.add_argument(
        "--api-nice",
        type=int,
        default=0,
        help="the API process's nice value (negative: before the pipeline; needs root)",
    )
    parser.add_argument(
        "--share",
        type=float,
        default=0.5,
        help="the pipeline's load as a share of its maximum (0: the API alone)",
    )
    args = parser.parse_args()
    for name in ("hosts", "backlog", "runs", "hosts_rate", "packages_rate"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not -20 <= args.api_nice <= 19:
        parser.error("--api-nice is between -20 and 19")
    if not 0 <= args.share <= 1:
        parser.error("--share is between 0 and 1")
    if args.seconds < 5:
        parser.error("--seconds must be at least 5 (loadtest counts whole seconds)")
    asyncio.run(run(Options(**vars(args))))


if __name__ == "__main__":
    main()
