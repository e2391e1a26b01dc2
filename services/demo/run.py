"""The demo's steps: set up (bootstrap, migrate, three tenants), start the services as processes,
enroll a fleet with enrollment tokens, publish through the simulator (plus a few misbehaving
publishers), and watch until every report is in its place; then stop the services and say where
to look. `down` removes everything a demo created."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.live import Live

from services.agent.simulate import Outcome, enroll_fleet, simulate
from services.catalog import store as catalog_store
from services.core import dead_letters as dlq
from services.core.broker.users import BrokerRole, management_url
from services.core.names import Names
from services.core.registry import queries as registry
from services.core.settings import Settings
from services.demo.view import Snapshot, render
from services.ops import migrate
from services.ops.bootstrap import bootstrap, teardown
from services.ops.fleet import FleetOperator
from services.ops.management import Management
from services.ops.tenants import create_tenant, registry_connection

STATE_DIR = Path(".siloflow-demo")  # the services' log and pid, in the working directory
MISBEHAVING = 4  # letters the simulator's misbehaving publishers leave
SERVICES_STOP_S = 60.0
# The real bookworm catalog shipped with siloflow (services/catalog/data): the demo's fleet runs
# Debian 12, and its findings are the answer a scanner would give for that snapshot.
SHIPPED_CATALOG = resources.files("services.catalog").joinpath("data/debian12-security-fixes.json")


@dataclass
class Options:
    """What the demo is asked to do (the command's options)."""

    admin_dsn: str
    tenants: tuple[str, ...] = ("acme", "globex", "initech")
    hosts_per_tenant: int = 100
    reports: int = 3000
    rate_per_s: float = 300.0
    timeout_s: float = 180.0


@dataclass
class Result:
    """What the demo did: the tenants' databases, what was published, what each committed."""

    databases: dict[str, str]  # tenant -> its database
    outcome: Outcome
    committed: dict[str, int]  # tenant -> reports this demo added to its silo
    dead_letters: dict[str, dict[str, int]]
    settled: bool
    log: Path
    elapsed_s: float = 0.0
    # tenant -> (hosts with open findings, open findings), from the shipped catalog
    findings: dict[str, tuple[int, int]] = field(default_factory=dict)
    catalog_revision: int | None = None
    notes: list[str] = field(default_factory=list)


class Watcher:
    """Reads the deployment for the view: each silo's count, queue depths, dead letters."""

    def __init__(self, settings: Settings, admin_dsn: str, databases: dict[str, str]) -> None:
        self.settings = settings
        self.server = admin_dsn.rsplit("/", 1)[0]
        self.databases = databases
        self.names = Names(settings.namespace)

    async def committed(self) -> dict[str, int]:
        """Reports in each tenant's database."""
        counts = {}
        for slug, database in self.databases.items():
            conn = await asyncpg.connect(f"{self.server}/{database}")
            try:
                counts[slug] = int(await conn.fetchval("select count(*) from agent_messages"))
            finally:
                await conn.close()
        return counts

    async def findings(self) -> dict[str, tuple[int, int]]:
        """Hosts with open findings, and open findings, in each tenant's database."""
        found = {}
        for slug, database in self.databases.items():
            conn = await asyncpg.connect(f"{self.server}/{database}")
            try:
                row = await conn.fetchrow(
                    "select count(distinct host_id) as hosts, count(*) as open from findings "
                    "where resolved_at is null"
                )
                assert row is not None
                found[slug] = (int(row["hosts"]), int(row["open"]))
            finally:
                await conn.close()
        return found

    async def queues(self) -> dict[str, int]:
        """Messages in each work queue (the management API's view)."""
        async with Management(management_url(self.settings, BrokerRole.STATUS)) as api:
            listed = await api.queues(self.settings.vhost)
        prefix = f"{self.names.namespace}.dlq."
        return {
            q["name"]: int(q.get("messages", 0) or 0)
            for q in listed
            if not q["name"].startswith(prefix) and (q["name"] != self.names.register_queue)
        }

    async def dead_letters(self) -> dict[str, dict[str, int]]:
        """Dead letters by queue and reason, as `dlq list` counts them."""
        by_queue: dict[str, Counter[str]] = {}
        for letter in await dlq.browse(self.settings, dlq.Filters()):
            by_queue.setdefault(f"dlq.{letter.queue}", Counter())[letter.reason] += 1
        return {q: dict(c) for q, c in by_queue.items()}


async def set_up(
    settings: Settings, options: Options, say: Callable[[str], None]
) -> dict[str, str]:
    """Bootstrap, migrate and provision the demo tenants (each step idempotent)."""
    say("bootstrapping and migrating")
    await bootstrap(settings, options.admin_dsn)
    report = await migrate.migrate(settings)
    if report.failed:
        raise RuntimeError(f"migrations failed: {report.failed}")
    with resources.as_file(SHIPPED_CATALOG) as path, path.open("rb") as stream:
        imported = await catalog_store.import_feed(
            settings, stream, source="the shipped bookworm catalog", releases={"bookworm"}
        )
    say(
        f"vulnerability catalog: revision {imported.current} ({imported.total:,} advisories"
        + (", already in force)" if imported.revision is None else ")")
    )
    databases = {}
    for slug in options.tenants:
        async with registry_connection(settings) as conn:
            record = await registry.get_tenant(conn, slug)
        if record is None:
            say(f"provisioning tenant {slug}")
            record = (await create_tenant(settings, slug)).tenant
        databases[slug] = record.db_name
    return databases


def start_services(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`siloflow run all` (ingest, router, sweeper, the worker supervisor) as a process of its
    own, its log in STATE_DIR; its pid recorded for `down`."""
    STATE_DIR.mkdir(exist_ok=True)
    log = (STATE_DIR / "services.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "all"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops them
    )
    log.close()
    (STATE_DIR / "services.pid").write_text(str(process.pid))
    return process


def stop_services(process: subprocess.Popen[bytes]) -> None:
    """Stop `siloflow run all` (SIGTERM, then a kill after the grace period)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVICES_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    (STATE_DIR / "services.pid").unlink(missing_ok=True)


async def wait_consuming(settings: Settings, queue: str, timeout_s: float = 60.0) -> None:
    """Return once the queue has a consumer; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    async with Management(management_url(settings, BrokerRole.STATUS)) as api:
        while time.monotonic() < deadline:
            found = await api.queue(settings.vhost, queue)
            if found and int(found.get("consumers", 0) or 0) > 0:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"nothing consumes {queue} after {timeout_s:.0f} s: see the services' log")


@dataclass
class Progress:
    """What the fleet has done so far, for the view."""

    phase: str = "enrolling hosts with enrollment tokens"
    enrolled: int = 0
    published: Counter[str] = field(default_factory=Counter)


async def demo(
    settings: Settings, options: Options, env: dict[str, str], console: Console
) -> Result:
    """The demo: set up, start the services, enroll and publish, watch it live, stop."""
    started = time.monotonic()
    databases = await set_up(settings, options, lambda line: console.print(f"[dim]{line}[/dim]"))
    watcher = Watcher(settings, options.admin_dsn, databases)
    console.print("[dim]starting the services (siloflow run all)[/dim]")
    services = start_services(env)
    progress = Progress()

    def on_registered() -> None:
        progress.enrolled += 1

    async def fleet_runs() -> Outcome:
        await wait_consuming(settings, Names(settings.namespace).register_queue)
        fleet = await enroll_fleet(
            settings,
            FleetOperator(settings),
            list(options.tenants),
            options.hosts_per_tenant,
            on_registered=on_registered,
        )
        progress.phase = f"{len(fleet)} hosts reporting ({options.rate_per_s:g} reports/s)"
        outcome = await simulate(
            settings,
            fleet,
            reports=options.reports,
            rate_per_s=options.rate_per_s,
            progress=False,
            on_published=lambda slug, _kind: progress.published.update([slug]),
        )
        progress.phase = "waiting for the last reports to land"
        return outcome

    try:
        before = await watcher.committed()
        letters_before = _total(await watcher.dead_letters())
        running = asyncio.create_task(fleet_runs())
        snapshot = await _watch(
            watcher, progress, running, before, letters_before, options, started, console
        )
        settled = running.done() and snapshot.settled
        if not running.done():
            running.cancel()
        outcome = running.result() if settled else Outcome()
        return Result(
            databases=databases,
            outcome=outcome,
            committed=snapshot.committed,
            dead_letters=await watcher.dead_letters(),
            settled=settled,
            log=STATE_DIR / "services.log",
            elapsed_s=time.monotonic() - started,
            findings=await watcher.findings(),
            catalog_revision=(await catalog_store.revisions(settings, limit=1))[0].id,
        )
    finally:
        console.print("[dim]stopping the services[/dim]")
        await asyncio.to_thread(stop_services, services)


def _total(letters: dict[str, dict[str, int]]) -> int:
    return sum(sum(reasons.values()) for reasons in letters.values())


async def _watch(
    watcher: Watcher,
    progress: Progress,
    running: asyncio.Task[Outcome],
    before: dict[str, int],
    letters_before: int,
    options: Options,
    started: float,
    console: Console,
) -> Snapshot:
    """Redraw the view twice a second until every report is in its place (or time is up)."""
    letters: dict[str, dict[str, int]] = {}
    last, tick = dict(before), time.monotonic()
    rates: dict[str, float] = {}
    snapshot = Snapshot(0.0, progress.phase, 0, {}, {}, {})
    with Live(render(snapshot), console=console, refresh_per_second=4) as live:
        for step in range(1_000_000):
            counts = await watcher.committed()
            now = time.monotonic()
            for slug, count in counts.items():
                instant = (count - last.get(slug, 0)) / max(now - tick, 1e-3)
                rates[slug] = 0.5 * rates.get(slug, instant) + 0.5 * instant
            last, tick = counts, now
            if step % 4 == 0:  # reading the letters holds them a moment: not every tick
                letters = await watcher.dead_letters()
            snapshot = Snapshot(
                elapsed_s=now - started,
                phase=progress.phase,
                enrolled=progress.enrolled,
                published=dict(progress.published),
                committed={s: c - before.get(s, 0) for s, c in counts.items()},
                rates=dict(rates),
                queues=await watcher.queues(),
                dead_letters=letters,
            )
            live.update(render(snapshot))
            if running.done():
                running.result()  # raises what the fleet ran into
                if snapshot.settled and _total(letters) >= letters_before + MISBEHAVING:
                    break
            if now - started > options.timeout_s:
                break
            await asyncio.sleep(0.5)
        if snapshot.settled:
            # The last frame agrees with the summary below it: the management API counts
            # queues every few seconds, so its depths are read until they show them drained.
            snapshot = dataclasses.replace(
                snapshot,
                queues=await _drained(watcher, options.timeout_s - (time.monotonic() - started)),
                dead_letters=await watcher.dead_letters(),
                elapsed_s=time.monotonic() - started,
                phase="done: every report is in its place",
            )
            live.update(render(snapshot))
    console.line()  # the view leaves the cursor at the end of its last line
    return snapshot


async def _drained(watcher: Watcher, within_s: float) -> dict[str, int]:
    """The work queues' depths once the management API shows them empty (or as they are
    when `within_s` ran out)."""
    deadline = time.monotonic() + max(within_s, 15.0)
    while True:
        queues = await watcher.queues()
        if not any(queues.values()) or time.monotonic() > deadline:
            return queues
        await asyncio.sleep(1.0)


async def down(settings: Settings, admin_dsn: str) -> list[str]:
    """Stop a demo's services left running, then remove everything bootstrap and the demo made."""
    removed = []
    pid_file = STATE_DIR / "services.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _is_our_services(pid):  # a stale file's pid may be someone else's process by now
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                removed.append(f"services (pid {pid})")
        pid_file.unlink()
    return removed + await teardown(settings, admin_dsn)


def _is_our_services(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"services.cli" in command and b"all" in command
